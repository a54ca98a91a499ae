package attach

import (
	"context"
	"errors"
	"log/slog"
	"testing"

	"github.com/vmi-exporter/vmi-exporter/collector"
	"github.com/vmi-exporter/vmi-exporter/internal/wintest"
	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/arch/amd64"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
	"github.com/vmi-exporter/vmi-exporter/introspect/hook"
	"github.com/vmi-exporter/vmi-exporter/introspect/paging"
)

// plainDriver has only what every driver has, and pausing.
type plainDriver struct{}

func (plainDriver) ReadPhysical(introspect.Pa, []byte) error { return driver.ErrOutOfRange }
func (plainDriver) VCPUs() int                               { return 1 }
func (plainDriver) Registers(introspect.VCPU) (amd64.Registers, error) {
	return amd64.Registers{}, nil
}
func (plainDriver) Close() error  { return nil }
func (plainDriver) Pause() error  { return nil }
func (plainDriver) Resume() error { return nil }

// breakpointDriver adds native breakpoints and events.
type breakpointDriver struct{ plainDriver }

func (breakpointDriver) InsertBreakpoint(introspect.Va) error { return nil }
func (breakpointDriver) RemoveBreakpoint(introspect.Va) error { return nil }
func (breakpointDriver) EnableMonitor(driver.Monitor) error   { return nil }
func (breakpointDriver) DisableMonitor(driver.Monitor) error  { return nil }
func (breakpointDriver) WaitEvent(context.Context) (*driver.Event, error) {
	return nil, context.Canceled
}
func (breakpointDriver) Respond(*driver.Event, driver.Response) error { return nil }

// liveDriver answers the liveness contract as told.
type liveDriver struct {
	plainDriver
	alive   error
	running bool // ReadsWhileRunning
}

func (d liveDriver) Alive() error            { return d.alive }
func (d liveDriver) ReadsWhileRunning() bool { return d.running }

// The engine follows the driver's capabilities, in the order of engines.
func TestEngineByCapability(t *testing.T) {
	mem := paging.NewMemory(plainDriver{}, paging.Level4)
	if _, name, err := newEngine(breakpointDriver{}, mem, discard()); err != nil || name != "native" {
		t.Errorf("breakpoints and events: engine %q, %v; want native", name, err)
	}
	if _, _, err := newEngine(plainDriver{}, mem, discard()); !errors.Is(err, driver.ErrUnsupported) {
		t.Errorf("no hook capability: %v, want ErrUnsupported", err)
	}
	g, _ := windowsModel(t)
	eng, name, err := newEngine(g.M, mem, discard())
	if err != nil || name != "views" {
		t.Fatalf("model with views: engine %q, %v; want views", name, err)
	}
	eng.Close()
}

// Verify combines the driver's liveness with the OS layer's check, which
// is used only when the driver reads memory while the guest runs.
func TestVerifyContract(t *testing.T) {
	gone := errors.New("reset")
	osCheck := errors.New("banner changed")
	unsupported := driver.ErrUnsupported
	for _, tc := range []struct {
		name  string
		d     driver.Driver
		check error // nil: the OS layer has no check
		want  error // nil: Verify passes
	}{
		{"no liveness, no check", plainDriver{}, nil, unsupported},
		{"no liveness, memory only when stopped", plainDriver{}, osCheck, unsupported},
		{"alive, no live reads", liveDriver{}, osCheck, nil},
		{"gone", liveDriver{alive: gone, running: true}, nil, gone},
		{"alive, banner changed", liveDriver{running: true}, osCheck, osCheck},
		{"no QMP, banner changed", liveDriver{alive: unsupported, running: true}, osCheck, osCheck},
		{"no QMP, no shared RAM", liveDriver{alive: unsupported}, osCheck, unsupported},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := &guestOS{}
			if tc.check != nil {
				o.check = func() error { return tc.check }
			}
			err := (&session{d: tc.d, os: o}).Verify()
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("Verify: %v, want %v", err, tc.want)
			}
		})
	}
}

// A guest whose os: is auto is found by trying the OS layers in turn: the
// Windows model, after Linux discovery finds no banner.
func TestOpenDetectsWindows(t *testing.T) {
	g, dir := windowsModel(t)
	if _, err := Open(t.Context(), g.M, collector.GuestConfig{Name: "w", OS: "beos"}, "", nil); err == nil {
		t.Error("attached with an unknown os")
	}
	s, err := Open(t.Context(), g.M, collector.GuestConfig{Name: "w", OS: "auto", Profile: collector.ProfileConfig{CacheDir: dir}}, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if gi := s.Guest(); gi.OS != "windows" || gi.Domain != "w" {
		t.Errorf("guest %+v", gi)
	}
}

// Every backend validates its own section; an unknown driver is named.
func TestValidateGuest(t *testing.T) {
	if errs := ValidateGuest(collector.GuestConfig{Driver: "qemu"}); len(errs) != 1 {
		t.Errorf("qemu without gdb_socket: %v", errs)
	}
	if errs := ValidateGuest(collector.GuestConfig{Driver: "xen", Xen: collector.XenConfig{Domain: "d"}}); len(errs) != 0 {
		t.Errorf("xen with a domain: %v", errs)
	}
	if errs := ValidateGuest(collector.GuestConfig{Driver: "vbox"}); len(errs) != 1 {
		t.Errorf("unknown driver: %v", errs)
	}
	if _, ok := Attachers(nil)["qemu"]; !ok {
		t.Error("no qemu attacher")
	}
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// A driver that cannot pause still attaches; its session does not offer
// pausing to the collector either.
func TestOpenWithoutPauser(t *testing.T) {
	g, dir := windowsModel(t)
	type noPause struct{ hook.ViewsDriver }
	s, err := Open(t.Context(), noPause{g.M}, collector.GuestConfig{Name: "w", OS: "windows", Profile: collector.ProfileConfig{CacheDir: dir}}, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, ok := s.(driver.Pauser); ok {
		t.Error("session of a driver without Pause is a Pauser")
	}
	g2, _ := windowsModel(t)
	s2, err := Open(t.Context(), g2.M, collector.GuestConfig{Name: "w", OS: "windows", Profile: collector.ProfileConfig{CacheDir: dir}}, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if _, ok := s2.(driver.Pauser); !ok {
		t.Error("session of a pausing driver is no Pauser")
	}
}

// windowsModel is a synthetic Windows 10 guest on the model of a
// hypervisor with views, and the symbol store holding its profile.
func windowsModel(t *testing.T) (*wintest.Guest, string) {
	t.Helper()
	isf, err := wintest.LoadProfile("win10-22H2")
	if err != nil {
		t.Fatal(err)
	}
	g, err := wintest.New(isf, wintest.Options{VCPUs: 1})
	if err != nil {
		t.Fatal(err)
	}
	dir, err := wintest.ProfileDir()
	if err != nil {
		t.Fatal(err)
	}
	return g, dir
}
