package attach_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/vmi-exporter/vmi-exporter/collector"
	"github.com/vmi-exporter/vmi-exporter/collector/attach"
	"github.com/vmi-exporter/vmi-exporter/internal/wintest"
	"github.com/vmi-exporter/vmi-exporter/introspect/hook"
)

// TestViewsWindows attaches to a synthetic Windows 10 guest on the model of
// a hypervisor with views, the path the Xen backend takes after opening the
// domain: kernel found from the syscall entry, profile from the symbol store
// by CodeView, four probes hooked in a private view. Closing must leave the
// machine pristine and guest RAM byte-identical.
func TestViewsWindows(t *testing.T) {
	isf, err := wintest.LoadProfile("win10-22H2")
	if err != nil {
		t.Fatal(err)
	}
	g, err := wintest.New(isf, wintest.Options{VCPUs: 2, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	dir, err := wintest.ProfileDir()
	if err != nil {
		t.Fatal(err)
	}
	before := bytes.Clone(g.M.GuestRAM())

	cfg := collector.GuestConfig{Name: "win10", Driver: "xen", OS: "windows", Profile: collector.ProfileConfig{CacheDir: dir}}
	s, err := attach.Open(t.Context(), g.M, cfg, "7", nil)
	if err != nil {
		t.Fatal(err)
	}
	if gi := s.Guest(); gi.OS != "windows" || gi.Domain != "win10" || gi.DomainID != "7" || !strings.Contains(strings.ToLower(gi.Kernel), "ntkrnlmp") {
		t.Errorf("guest identity %+v", gi)
	}
	probes, err := s.OS().Probes(collector.ProbeKinds())
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, p := range probes {
		names[p.Name] = true
		if p.Addr != g.Symbol(p.Name) {
			t.Errorf("probe %s at %v, guest symbol at %v", p.Name, p.Addr, g.Symbol(p.Name))
		}
		if err := s.Engine().Add(hook.Hook{Addr: p.Addr, Root: p.Root, Global: true, Tag: p.Name}); err != nil {
			t.Fatalf("hook %s: %v", p.Name, err)
		}
	}
	for _, want := range []string{"NtCreateFile", "NtWriteFile", "PspInsertProcess", "MmCleanProcessAddressSpace"} {
		if !names[want] {
			t.Errorf("no probe %s in %v", want, names)
		}
	}
	if err := g.M.Pristine(); err == nil {
		t.Error("hooks installed but the machine looks untouched")
	}
	if err := s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := g.M.Pristine(); err != nil {
		t.Errorf("after close: %v", err)
	}
	if !bytes.Equal(before, g.M.GuestRAM()) {
		t.Error("guest RAM changed by attach and detach")
	}
}

// TestViewsRejectsLinux: a Windows guest configured as Linux is refused:
// Linux discovery finds no kernel in it.
func TestViewsRejectsLinux(t *testing.T) {
	isf, err := wintest.LoadProfile("win10-22H2")
	if err != nil {
		t.Fatal(err)
	}
	g, err := wintest.New(isf, wintest.Options{VCPUs: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := attach.Open(t.Context(), g.M, collector.GuestConfig{Name: "x", OS: "linux"}, "", nil); err == nil {
		t.Fatal("attached a Linux guest config through the Windows views path")
	}
}
