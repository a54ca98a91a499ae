package collector

import (
	"slices"
	"strings"
	"testing"
)

// Every guest-controlled string of an event is capped, the renamed-from
// path and argv included: argv shares one cap in all, and its cut also
// sets ArgsTruncated.
func TestCapEventAllFields(t *testing.T) {
	long := strings.Repeat("a", 100)
	ev := &Event{Path: long, OldPath: long, Syscall: long, Args: []string{"x", long, long},
		Process: Process{Name: long, Image: long}}
	if n := capEvent(ev, 10); n != 6 {
		t.Errorf("capEvent cut %d fields, want 6", n)
	}
	for _, s := range []string{ev.Path, ev.OldPath, ev.Syscall, ev.Process.Name, ev.Process.Image} {
		if len(s) != 10 {
			t.Errorf("field of %d bytes, want 10", len(s))
		}
	}
	if total := len(strings.Join(ev.Args, "")); total > 10 || len(ev.Args) != 2 || !ev.ArgsTruncated {
		t.Errorf("args %q (%d bytes), truncated %v", ev.Args, total, ev.ArgsTruncated)
	}
	want := []string{FieldPath, FieldOldPath, FieldSyscall, FieldProcessName, FieldProcessImage, FieldArgs}
	if !slices.Equal(ev.Truncated, want) {
		t.Errorf("truncated %v, want %v", ev.Truncated, want)
	}
	short := &Event{Path: "/a", Args: []string{"ls", "-l"}}
	if n := capEvent(short, 10); n != 0 || short.ArgsTruncated || len(short.Args) != 2 {
		t.Errorf("short event changed: %+v", short)
	}
}
