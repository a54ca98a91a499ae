package collector_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/vmi-exporter/vmi-exporter/collector"
	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/profile"
)

// symbols resolves names from a map the way an OS layer does: a missing
// name is an error wrapping profile.ErrNotFound.
func symbols(m map[string]introspect.Va) func(string) (introspect.Va, error) {
	return func(name string) (introspect.Va, error) {
		a, ok := m[name]
		if !ok {
			return 0, fmt.Errorf("symbol %s: %w", name, profile.ErrNotFound)
		}
		return a, nil
	}
}

func TestSelectProbesOptional(t *testing.T) {
	specs := []collector.ProbeSpec{
		{Kind: collector.KindFileWrite, Func: "vfs_write"},
		{Kind: collector.KindFileWrite, Func: "vfs_writev", Optional: true},
		{Kind: collector.KindProcessExit, Func: "do_exit"},
	}
	enabled := []collector.Kind{collector.KindFileWrite, collector.KindProcessExit}
	names := func(ps []collector.Probe) []string {
		var out []string
		for _, p := range ps {
			out = append(out, fmt.Sprintf("%s@%#x/%s/%v", p.Name, uint64(p.Addr), p.Kind, p.Root))
		}
		return out
	}

	// Every symbol present: the optional probe is installed too, after
	// the other probe of its kind.
	all := symbols(map[string]introspect.Va{"vfs_write": 0x1000, "vfs_writev": 0x2000, "do_exit": 0x3000})
	ps, err := collector.SelectProbes(enabled, specs, all, 0x9000)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		fmt.Sprintf("vfs_write@0x1000/%s/%v", collector.KindFileWrite, introspect.Pa(0x9000)),
		fmt.Sprintf("vfs_writev@0x2000/%s/%v", collector.KindFileWrite, introspect.Pa(0x9000)),
		fmt.Sprintf("do_exit@0x3000/%s/%v", collector.KindProcessExit, introspect.Pa(0x9000)),
	}
	if got := names(ps); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("all symbols: got %v, want %v", got, want)
	}

	// The optional symbol missing (inlined in this build): the others
	// are still installed.
	noV := symbols(map[string]introspect.Va{"vfs_write": 0x1000, "do_exit": 0x3000})
	ps, err = collector.SelectProbes(enabled, specs, noV, 0x9000)
	if err != nil {
		t.Fatalf("missing optional symbol: %v", err)
	}
	if got := names(ps); fmt.Sprint(got) != fmt.Sprint([]string{want[0], want[2]}) {
		t.Errorf("missing optional symbol: got %v", got)
	}

	// A required symbol missing fails, naming it.
	noW := symbols(map[string]introspect.Va{"vfs_writev": 0x2000, "do_exit": 0x3000})
	if _, err := collector.SelectProbes(enabled, specs, noW, 0x9000); !errors.Is(err, profile.ErrNotFound) {
		t.Errorf("missing required symbol: err %v, want ErrNotFound", err)
	}

	// Another lookup failure of an optional symbol is not hidden.
	broken := errors.New("profile unreadable")
	failing := func(name string) (introspect.Va, error) {
		if name == "vfs_writev" {
			return 0, broken
		}
		return all(name)
	}
	if _, err := collector.SelectProbes(enabled, specs, failing, 0x9000); !errors.Is(err, broken) {
		t.Errorf("optional symbol lookup error: err %v, want %v", err, broken)
	}

	// A disabled kind's optional probe is not looked up at all.
	ps, err = collector.SelectProbes([]collector.Kind{collector.KindProcessExit}, specs, failing, 0x9000)
	if err != nil || len(ps) != 1 || ps[0].Name != "do_exit" {
		t.Errorf("only process.exit enabled: %v, %v", names(ps), err)
	}
}
