package qemu

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/vmi-exporter/vmi-exporter/introspect/arch/amd64"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver/qemu/gdbstub"
)

// qemuTargetDesc parses QEMU 10's x86-64 target description from the
// gdbstub package's test data (found where that package lives, before or
// after it moves under this driver).
func qemuTargetDesc(t testing.TB) *gdbstub.TargetDesc {
	var dir string
	for _, d := range []string{"../../gdbstub/testdata", "gdbstub/testdata"} {
		if _, err := os.Stat(filepath.Join(d, "qemu10-target.xml")); err == nil {
			dir = d
		}
	}
	if dir == "" {
		t.Skip("no gdbstub test data")
	}
	files := map[string]string{"target.xml": "qemu10-target.xml", "i386-64bit.xml": "qemu10-i386-64bit.xml"}
	td, err := gdbstub.ParseTargetDesc("target.xml", func(name string) ([]byte, error) {
		f, ok := files[name]
		if !ok {
			return nil, errors.New("no such annex")
		}
		return os.ReadFile(filepath.Join(dir, f))
	})
	if err != nil {
		t.Fatal(err)
	}
	return td
}

// FuzzRegisterReply: a g reply of any length and content decodes into
// registers or errors, never reads past the reply.
func FuzzRegisterReply(f *testing.F) {
	l, err := newLayout(qemuTargetDesc(f))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(make([]byte, l.size))
	f.Add(make([]byte, l.size-1))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, raw []byte) {
		var r amd64.Registers
		if err := l.decode(raw, &r); err == nil && len(raw) < l.size {
			t.Fatalf("a %d-byte reply decoded (layout needs %d)", len(raw), l.size)
		}
	})
}
