package qmp

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"testing"
)

// fakeQEMU answers QMP on one end of a pipe: greeting, then for each
// command an event (to test interleaving) and a reply from answer.
func fakeQEMU(t *testing.T, srv net.Conn, answer func(cmd string, args json.RawMessage) string) {
	t.Helper()
	go func() {
		defer srv.Close()
		fmt.Fprintln(srv, `{"QMP": {"version": {"qemu": {"micro": 2, "minor": 0, "major": 10}, "package": "Debian"}, "capabilities": ["oob"]}}`)
		sc := bufio.NewScanner(srv)
		for sc.Scan() {
			var req struct {
				Execute   string          `json:"execute"`
				Arguments json.RawMessage `json:"arguments"`
				ID        string          `json:"id"`
			}
			if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
				return
			}
			fmt.Fprintln(srv, `{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"}`)
			fmt.Fprintf(srv, "{%s, \"id\": %q}\n", answer(req.Execute, req.Arguments), req.ID)
		}
	}()
}

func TestClient(t *testing.T) {
	cli, srv := net.Pipe()
	fakeQEMU(t, srv, func(cmd string, args json.RawMessage) string {
		switch cmd {
		case "qmp_capabilities", "stop", "cont":
			return `"return": {}`
		case "query-status":
			return `"return": {"status": "paused", "singlestep": false, "running": false}`
		case "query-cpus-fast":
			return `"return": [{"thread-id": 100, "cpu-index": 0, "qom-path": "/machine/unattached/device[0]", "target": "x86_64"}, {"thread-id": 101, "cpu-index": 1, "qom-path": "/machine/unattached/device[1]", "target": "x86_64"}]`
		case "human-monitor-command":
			var a map[string]string
			json.Unmarshal(args, &a)
			return fmt.Sprintf(`"return": "ran %s\r\n"`, a["command-line"])
		}
		return `"error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}`
	})
	events := make(chan Event, 2) // fills up: later events are dropped there
	var seen []string
	c, err := NewClient(cli, Options{Events: events, OnEvent: func(ev Event) { seen = append(seen, ev.Event) }})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Version.Major != 10 || c.Version.Micro != 2 {
		t.Errorf("version %+v", c.Version)
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	st, err := c.QueryStatus()
	if err != nil || st.Running || st.Status != "paused" {
		t.Errorf("status %+v %v", st, err)
	}
	cpus, err := c.QueryCPUs()
	if err != nil || len(cpus) != 2 || cpus[1].ThreadID != 101 || cpus[1].Index != 1 {
		t.Errorf("cpus %+v %v", cpus, err)
	}
	out, err := c.HumanMonitorCommand("info registers")
	if err != nil || out != "ran info registers\r\n" {
		t.Errorf("hmp %q %v", out, err)
	}
	err = c.Execute("nope", nil, nil)
	var qe *Error
	if !errors.As(err, &qe) || qe.Class != "CommandNotFound" {
		t.Errorf("error %v", err)
	}
	if len(events) == 0 {
		t.Fatal("no events delivered")
	}
	if ev := <-events; ev.Event != "STOP" || ev.Timestamp.Microseconds != 2 {
		t.Errorf("event %+v", ev)
	}
	// One event before each of the 6 replies (capabilities included): the
	// callback saw all of them, the full channel only two.
	if len(seen) != 6 || seen[5] != "STOP" || len(events) != 1 {
		t.Errorf("OnEvent saw %v; channel kept %d", seen, len(events)+1)
	}
}

func TestBadGreeting(t *testing.T) {
	cli, srv := net.Pipe()
	go func() {
		fmt.Fprintln(srv, `{"hello": 1}`)
		srv.Close()
	}()
	if _, err := NewClient(cli, Options{}); err == nil {
		t.Fatal("accepted a non-QMP greeting")
	}
}

func TestWrongID(t *testing.T) {
	cli, srv := net.Pipe()
	go func() {
		defer srv.Close()
		fmt.Fprintln(srv, `{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}}}`)
		sc := bufio.NewScanner(srv)
		sc.Scan()
		fmt.Fprintln(srv, `{"return": {}, "id": "other"}`)
	}()
	if _, err := NewClient(cli, Options{}); err == nil {
		t.Fatal("accepted a reply with a foreign id")
	}
}
