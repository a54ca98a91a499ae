package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmi-exporter/vmi-exporter/internal/testutil"
)

// statusOf returns the HTTP status of url, 0 if it cannot be fetched.
func statusOf(url string) int {
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// The binary a DaemonSet pod runs, given the chart's fleet-wide config:
// with no guests, and with a guest whose RAM file and sockets are not on
// this host, it stays up, answers /-/healthy and /-/ready, and /metrics
// says the guest is down and why (before: exit 1 at start in both cases).
func TestBinaryStaysUpWithoutItsGuests(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bin := testutil.BuildExporter(ctx, t)
	absent := t.TempDir() // nothing in it: the guest runs on another host
	for _, tc := range []struct {
		name, guests string
		want         []string // what /metrics must have
	}{
		{"no guests", "guests: []", []string{"\nvmi_exporter_build_info{version="}},
		{"absent guest", fmt.Sprintf(`guests:
  - name: elsewhere
    qemu:
      gdb_socket: %[1]s/elsewhere.gdb
      qmp_socket: %[1]s/elsewhere.qmp
      ram_path: %[1]s/elsewhere.ram
      plugin_shm: %[1]s/elsewhere.hooks
`, absent), []string{
			"\n" + `vmi_guest_up{domain="elsewhere"} 0` + "\n",
			"\n" + `vmi_guest_down_reason{domain="elsewhere",reason="not_found"} 1` + "\n",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := testutil.FreeAddr(t)
			cfg := filepath.Join(t.TempDir(), "config.yml")
			if err := os.WriteFile(cfg, []byte(fmt.Sprintf("web: {listen_address: %q}\n%s\n", addr, tc.guests)), 0o600); err != nil {
				t.Fatal(err)
			}
			var stderr testutil.SyncBuffer
			cmd := exec.CommandContext(ctx, bin, "run", "--config", cfg, "--backoff.initial", "50ms", "--backoff.max", "200ms", "--log.format", "logfmt")
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			base := "http://" + addr
			deadline := time.Now().Add(30 * time.Second)
			for statusOf(base+"/-/ready") != 200 {
				select {
				case err := <-exited:
					t.Fatalf("exited: %v\n%s", err, stderr.String())
				default:
				}
				if time.Now().After(deadline) {
					t.Fatalf("never ready\n%s", stderr.String())
				}
				time.Sleep(50 * time.Millisecond)
			}
			if code := statusOf(base + "/-/healthy"); code != 200 {
				t.Errorf("/-/healthy: %d", code)
			}
			eventually(t, "metrics", func() bool {
				m := get(base + "/metrics")
				for _, w := range tc.want {
					if !strings.Contains(m, w) {
						return false
					}
				}
				return true
			})
			if tc.name == "absent guest" {
				// Retried with backoff, each failure logged with its
				// reason and delay.
				eventually(t, "two retries logged", func() bool {
					return strings.Count(stderr.String(), `msg="guest down, retrying" domain=elsewhere reason=not_found`) >= 2
				})
				if !strings.Contains(stderr.String(), "qemu.ram_path: stat "+absent+"/elsewhere.ram") {
					t.Errorf("log lacks the missing RAM file:\n%s", stderr.String())
				}
			}
			select {
			case err := <-exited:
				t.Fatalf("exited: %v\n%s", err, stderr.String())
			default:
			}
			cmd.Process.Signal(syscall.SIGTERM)
			if err := <-exited; err != nil {
				t.Errorf("exit after SIGTERM: %v\n%s", err, stderr.String())
			}
		})
	}
}
