package collector_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vmi-exporter/vmi-exporter/collector"
	"github.com/vmi-exporter/vmi-exporter/collector/collectortest"
	"github.com/vmi-exporter/vmi-exporter/internal/testutil"
)

// downRecorder is a recorder that also says why guests are down.
type downRecorder struct {
	*recorder
	downMu  sync.Mutex
	reasons []string // every Down reason, in order ("" when attached)
}

func (r *downRecorder) Down(_, reason string) {
	r.downMu.Lock()
	defer r.downMu.Unlock()
	r.reasons = append(r.reasons, reason)
}

func (r *downRecorder) seen() []string {
	r.downMu.Lock()
	defer r.downMu.Unlock()
	return append([]string(nil), r.reasons...)
}

// With no guests, Run reports its exporters started and waits for its
// context instead of returning (a DaemonSet pod on a host without guests).
func TestNoGuestsRunsUntilCancelled(t *testing.T) {
	started := make(chan struct{})
	c, err := collector.New(collector.Options{Started: func() { close(started) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- c.Run(ctx) }()
	<-started
	select {
	case err := <-errc:
		t.Fatalf("Run returned with no guests before its context ended: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// A guest whose files are missing on this host is down with reason
// not_found, logged with the delay as a duration string, retried with
// backoff, and up (reason cleared) once it appears.
func TestAbsentGuestIsDownWithReason(t *testing.T) {
	rec := &downRecorder{recorder: newRecorder()}
	a := &collectortest.Attacher{
		Guest: collector.Guest{OS: "linux"},
		AttachErr: func(n int) error {
			if n < 2 {
				return fmt.Errorf("qemu.ram_path: %w", &fs.PathError{Op: "stat", Path: "/nonexistent/ram", Err: syscall.ENOENT})
			}
			return nil
		},
	}
	var logs testutil.SyncBuffer
	c, err := collector.New(collector.Options{
		Guests:    []collector.GuestConfig{{Name: "absent", Driver: "t"}},
		Attachers: map[string]collector.Attacher{"t": a},
		Enabled:   collector.ProbeKinds(),
		Metrics:   rec,
		Backoff:   collector.Backoff{Initial: time.Millisecond, Max: 4 * time.Millisecond},
		Logger:    slog.New(slog.NewJSONHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- c.Run(ctx) }()
	waitFor(t, "the guest up after two failed attaches", func() bool { return rec.isUp("absent") })
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(rec.seen(), ","); got != "not_found,not_found," {
		t.Errorf("down reasons %q, want not_found twice then cleared", got)
	}
	n := 0
	for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var rec struct {
			Msg     string `json:"msg"`
			Reason  string `json:"reason"`
			RetryIn any    `json:"retry_in"`
		}
		if err := json.Unmarshal([]byte(l), &rec); err != nil || rec.Msg != "guest down, retrying" {
			continue
		}
		n++
		d, ok := rec.RetryIn.(string)
		if _, err := time.ParseDuration(d); !ok || err != nil || rec.Reason != collector.DownNotFound {
			t.Errorf("log line %s: retry_in is not a duration string or reason is wrong", l)
		}
	}
	if n != 2 {
		t.Errorf("%d down log lines, want 2:\n%s", n, logs.String())
	}
}

func TestAttachFailureReason(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("qemu.ram_path: %w", &fs.PathError{Op: "stat", Path: "/x", Err: syscall.ENOENT}), collector.DownNotFound},
		{fmt.Errorf("dial: %w", syscall.ECONNREFUSED), collector.DownRefused},
		{fmt.Errorf("open: %w", os.ErrPermission), collector.DownPermission},
		{fmt.Errorf("qmp: %w", context.DeadlineExceeded), collector.DownTimeout},
		{errors.New("no kernel banner"), collector.DownAttachError},
	} {
		if got := collector.AttachFailureReason(tc.err); got != tc.want {
			t.Errorf("%v: %s, want %s", tc.err, got, tc.want)
		}
	}
}
