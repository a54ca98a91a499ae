package xen

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver/xen/internal/abi"
)

// crash drops d's claim the way the kernel does when the process dies (the
// flock goes, the pid record stays) and abandons everything else.
func crash(d *Driver) {
	d.claim.f.Close()
	d.claim.f = nil
}

// An exporter killed while it had a ring, a view with hidden breakpoints
// and a vCPU waiting for an answer leaves all of it enabled. The next one
// tears it down at attach and gets a working ring of its own; the guest is
// left running (not paused, no single-step, no foreign view).
func TestOrphanedRingOfDeadExporterIsTornDown(t *testing.T) {
	dir := t.TempDir()
	f := newFakeXen(2, 16)
	dead, err := newDriver(f, 7, 2, Config{Logger: quiet, LockDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := dead.EnableMonitor(driver.MonitorBreakpoint); err != nil {
		t.Fatal(err)
	}
	if _, err := dead.CreateView(introspect.AccessRWX); err != nil {
		t.Fatal(err)
	}
	// A vCPU hits a hook and waits; the exporter dies before answering.
	push(t, f, reqSpec{flags: abi.FlagVCPUPaused, reason: abi.ReasonSoftwareBreakpoint, vcpu: 1, insnLen: 1, trapType: abi.EventTypeSWException})
	crash(dead)

	d, err := newDriver(f, 7, 2, Config{Logger: quiet, LockDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if d.claim.stale != os.Getpid() {
		t.Fatalf("stale pid %d, want the dead owner's %d", d.claim.stale, os.Getpid())
	}
	if err := d.EnableMonitor(driver.MonitorBreakpoint); err != nil {
		t.Fatalf("attach over an orphaned ring: %v", err)
	}
	if !d.Reclaimed() || f.called("forceMonitorDisable") != 1 {
		t.Fatalf("reclaimed %v, force disables %d", d.Reclaimed(), f.called("forceMonitorDisable"))
	}
	if f.altp2m || len(f.views) != 0 {
		t.Fatalf("the dead exporter's views survive: altp2m %v views %v", f.altp2m, f.views)
	}
	if len(f.ssOff) != 2 {
		t.Fatalf("single-step off on %v, want both vCPUs", f.ssOff)
	}
	if f.paused != 0 {
		t.Fatalf("domain left paused %d times", f.paused)
	}
	if le.Uint32(f.ring[abi.OffReqProd:]) != 0 {
		t.Fatal("the new ring is not fresh")
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	// A clean Close empties the record: the next owner finds no orphan.
	rec, err := os.ReadFile(filepath.Join(dir, "xen-7.lock"))
	if err != nil || len(rec) != 0 {
		t.Fatalf("record after Close %q, %v", rec, err)
	}
	next, err := newDriver(f, 7, 2, Config{Logger: quiet, LockDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if next.claim.stale != 0 {
		t.Fatalf("stale %d after a clean exit", next.claim.stale)
	}
	next.Close()
}

// A live owner is never torn down: the second driver fails with ErrBusy,
// naming the owner's pid, before it touches the domain.
func TestClaimOfLiveExporterIsBusy(t *testing.T) {
	dir := t.TempDir()
	f := newFakeXen(1, 16)
	live, err := newDriver(f, 7, 1, Config{Logger: quiet, LockDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	if err := live.EnableMonitor(driver.MonitorBreakpoint); err != nil {
		t.Fatal(err)
	}
	calls := len(f.calls)
	_, err = newDriver(f, 7, 1, Config{Logger: quiet, LockDir: dir})
	if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "pid "+strconv.Itoa(os.Getpid())) {
		t.Fatalf("second driver: %v", err)
	}
	for _, c := range f.calls[calls:] {
		if c != "maxGfn" {
			t.Fatalf("busy attach called %q", c)
		}
	}
}

// A ring no exporter of ours recorded (another introspection tool's) is
// left alone: enabling fails with the old error and nothing is torn down.
func TestForeignRingIsLeftAlone(t *testing.T) {
	f := newFakeXen(1, 16)
	f.ring = make([]byte, abi.PageSize) // someone else's
	d, err := newDriver(f, 7, 1, Config{Logger: quiet, LockDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.EnableMonitor(driver.MonitorBreakpoint); err == nil || !strings.Contains(err.Error(), "another introspector") {
		t.Fatalf("EnableMonitor over a foreign ring: %v", err)
	}
	if f.called("forceMonitorDisable") != 0 || f.ring == nil {
		t.Fatal("a foreign ring was torn down")
	}
	d.Close()
}

// A corrupt or hostile record is bounded and never mistaken for a pid.
func TestClaimRecordHostile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "xen-3.lock"), []byte(strings.Repeat("9", 1<<20)), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := takeClaim(dir, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer c.release()
	if c.stale != 0 {
		t.Fatalf("stale %d from a garbage record", c.stale)
	}
}
