package qmp

import (
	"io"
	"net"
	"testing"
	"time"
)

// FuzzClient: whatever a (hostile or broken) QEMU sends on the QMP socket
// (greeting, replies, events), the client errors or succeeds, without a
// panic or a hang.
func FuzzClient(f *testing.F) {
	greet := `{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 8}}, "capabilities": []}}` + "\n"
	f.Add([]byte(greet + `{"return": {}, "id": "vmi-1"}` + "\n" + `{"return": {"running": true, "status": "running"}, "id": "vmi-2"}` + "\n"))
	f.Add([]byte(greet + `{"return": {}, "id": "vmi-1"}` + "\n" + `{"event": "RESET", "data": {"guest": true}, "timestamp": {"seconds": 1, "microseconds": 2}}` + "\n" +
		`{"error": {"class": "GenericError", "desc": "no"}, "id": "vmi-2"}` + "\n"))
	f.Add([]byte(greet + `{"return": {}, "id": "vmi-1"}` + "\n" + `{"return": [{"cpu-index": 0, "thread-id": 42}], "id": "vmi-2"}` + "\n"))
	f.Add([]byte("{}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cli, srv := net.Pipe()
		defer cli.Close()
		go func() {
			defer srv.Close()
			go io.Copy(io.Discard, srv) // the client's requests
			srv.SetWriteDeadline(time.Now().Add(time.Second))
			srv.Write(data)
		}()
		events := make(chan Event, 4)
		c, err := NewClient(cli, Options{Timeout: 200 * time.Millisecond, Events: events})
		if err != nil {
			return
		}
		c.QueryStatus()
		c.QueryCPUs()
		c.Close()
	})
}
