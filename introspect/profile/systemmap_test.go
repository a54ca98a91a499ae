package profile

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseSystemMap(t *testing.T) {
	in := `ffffffff81000000 T _text
ffffffff81000000 T startup_64

000000000001fb80 D current_task
ffffffff8134a350 t dup
ffffffff8134a360 T dup
ffffffff8134a370 t dup
ffffffffc0000000 t mod_fn	[ext4]
ffffffff8211ffe0 R linux_banner
`
	syms, err := ParseSystemMap(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]uint64{
		"_text": 0xffffffff81000000, "current_task": 0x1fb80, "dup": 0xffffffff8134a360,
		"mod_fn": 0xffffffffc0000000, "linux_banner": 0xffffffff8211ffe0,
	} {
		if got, ok := syms[name]; !ok || got != want {
			t.Errorf("%s = %#x (%v), want %#x", name, got, ok, want)
		}
	}
	if len(syms) != 6 {
		t.Errorf("%d symbols, want 6", len(syms))
	}
}

func TestParseSystemMapErrors(t *testing.T) {
	for name, in := range map[string]string{
		"empty":       "",
		"debian-stub": "ffffffffffffffff B The real System.map is in the linux-image-<version>-dbg package\n",
		"bad-address": "zzzz T foo\n",
		"bad-type":    "ffffffff81000000 TT foo\n",
		"two-fields":  "ffffffff81000000 T\n",
		"long-line":   "ffffffff81000000 T " + strings.Repeat("x", MaxSystemMapLine) + "\n",
		"overflow":    "1ffffffffffffffff T foo\n",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseSystemMap(strings.NewReader(in)); !errors.Is(err, ErrSystemMap) {
				t.Fatalf("err = %v, want ErrSystemMap", err)
			}
		})
	}
}

func TestLoadSystemMapAndOverride(t *testing.T) {
	path := filepath.Join(t.TempDir(), "System.map")
	if err := os.WriteFile(path, []byte("ffffffff81000010 T a\nffffffff81000020 T new\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	syms, err := LoadSystemMap(path)
	if err != nil {
		t.Fatal(err)
	}
	p := New("k")
	p.Symbols["a"] = 1
	p.Symbols["kept"] = 2
	if n := p.OverrideSymbols(syms); n != 1 {
		t.Errorf("changed %d, want 1", n)
	}
	if p.Symbols["a"] != 0xffffffff81000010 || p.Symbols["new"] != 0xffffffff81000020 || p.Symbols["kept"] != 2 {
		t.Errorf("symbols after override: %v", p.Symbols)
	}
	o := New("isf")
	o.Symbols["kept"] = 3
	o.Types["qstr"] = &Struct{Name: "qstr", Size: 16}
	if n := p.Override(o); n != 1 || p.Types["qstr"].Size != 16 || p.Symbols["kept"] != 3 {
		t.Errorf("Override: changed %d, %v %v", n, p.Symbols, p.Types)
	}
	if _, err := LoadSystemMap(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func FuzzParseSystemMap(f *testing.F) {
	f.Add([]byte("ffffffff81000000 T _text\n000000000001fb80 D current_task\n"))
	f.Add([]byte("ffffffffffffffff B The real System.map is in the linux-image-<version>-dbg package\n"))
	f.Add([]byte("ffffffffc0000000 t mod_fn\t[ext4]\n\n\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		syms, err := ParseSystemMap(strings.NewReader(string(b)))
		if err == nil && len(syms) == 0 {
			t.Fatal("no error and no symbols")
		}
		if len(syms) > len(b) {
			t.Fatalf("%d symbols from %d bytes", len(syms), len(b))
		}
	})
}
