package testguest

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// cpioEntry is one entry read back by readNewc.
type cpioEntry struct {
	name       string
	mode       uint32
	nlink      uint32
	rmaj, rmin uint32
	data       []byte
}

// readNewc is an independent newc reader used to check CPIOWriter.
func readNewc(t *testing.T, b []byte) []cpioEntry {
	t.Helper()
	var out []cpioEntry
	off := 0
	align := func() { off = (off + 3) &^ 3 }
	for {
		if off+110 > len(b) {
			t.Fatalf("truncated header at %d", off)
		}
		h := string(b[off : off+110])
		if h[:6] != "070701" {
			t.Fatalf("bad magic %q at %d", h[:6], off)
		}
		field := func(i int) uint32 {
			v, err := strconv.ParseUint(h[6+8*i:14+8*i], 16, 32)
			if err != nil {
				t.Fatalf("field %d: %v", i, err)
			}
			return uint32(v)
		}
		mode, nlink, size, rmaj, rmin, namesize := field(1), field(4), field(6), field(9), field(10), field(11)
		if field(2) != 0 || field(3) != 0 || field(5) != 0 {
			t.Errorf("uid/gid/mtime not zero in %q", h)
		}
		off += 110
		name := string(b[off : off+int(namesize)-1])
		if b[off+int(namesize)-1] != 0 {
			t.Fatalf("name %q not NUL-terminated", name)
		}
		off += int(namesize)
		align()
		data := b[off : off+int(size)]
		off += int(size)
		align()
		if name == cpioTrailer {
			if off != len(b) {
				t.Errorf("%d bytes after trailer", len(b)-off)
			}
			return out
		}
		out = append(out, cpioEntry{name, mode, nlink, rmaj, rmin, data})
	}
}

func TestCPIOWriterRoundTrip(t *testing.T) {
	var b bytes.Buffer
	w := NewCPIOWriter(&b)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(w.Dir("bin", 0o755))
	must(w.File("/bin/a", 0o755, []byte("abc")))    // leading slash is dropped
	must(w.File("bin/empty", 0o644, nil))           // zero-length data
	must(w.File("bin/four", 0o600, []byte("1234"))) // already aligned
	must(w.Symlink("bin/sh", "busybox"))
	must(w.CharDev("dev/console", 0o600, 5, 1))
	must(w.Close())
	must(w.Close()) // idempotent
	if err := w.File("late", 0o644, nil); err == nil {
		t.Error("write after Close succeeded")
	}
	if b.Len()%4 != 0 {
		t.Errorf("archive length %d not 4-aligned", b.Len())
	}
	got := readNewc(t, b.Bytes())
	want := []cpioEntry{
		{"bin", 0o040755, 2, 0, 0, nil},
		{"bin/a", 0o100755, 1, 0, 0, []byte("abc")},
		{"bin/empty", 0o100644, 1, 0, 0, nil},
		{"bin/four", 0o100600, 1, 0, 0, []byte("1234")},
		{"bin/sh", 0o120777, 1, 0, 0, []byte("busybox")},
		{"dev/console", 0o020600, 1, 5, 1, nil},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d entries, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.name != w.name || g.mode != w.mode || g.nlink != w.nlink || g.rmaj != w.rmaj || g.rmin != w.rmin || !bytes.Equal(g.data, w.data) {
			t.Errorf("entry %d = %+v, want %+v", i, g, w)
		}
	}
}

func TestCPIOWriterRejectsBadNames(t *testing.T) {
	for _, name := range []string{"", "/", cpioTrailer, "a\x00b"} {
		w := NewCPIOWriter(io.Discard)
		if err := w.File(name, 0o644, nil); err == nil {
			t.Errorf("File(%q) succeeded", name)
		}
	}
}

type failWriter struct{ n int }

func (f *failWriter) Write(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, fmt.Errorf("disk full")
	}
	f.n--
	return len(p), nil
}

func TestCPIOWriterPropagatesErrors(t *testing.T) {
	w := NewCPIOWriter(&failWriter{n: 1})
	if err := w.Dir("a", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := w.Dir("b", 0o755); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("err = %v, want disk full", err)
	}
}

// TestInitramfsListing builds the real image layout (with a fake busybox)
// and lists it with GNU cpio, an independent reader.
func TestInitramfsListing(t *testing.T) {
	img, err := initramfsBytes([]byte("\x7fELF fake busybox"), []byte("\x7fELF fake vmi-writev"))
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(img))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	entries := readNewc(t, raw)
	byName := map[string]cpioEntry{}
	for _, e := range entries {
		byName[e.name] = e
	}
	for _, name := range []string{"init", "bin/vmi-round", "bin/vmi-writer", "bin/vmi-child", "bin/vmi-exiter", "bin/busybox", "bin/vmi-writev"} {
		e, ok := byName[name]
		if !ok {
			t.Errorf("%s missing", name)
			continue
		}
		if e.mode != 0o100755 {
			t.Errorf("%s mode %o, want 100755", name, e.mode)
		}
		if name != "bin/busybox" && name != "bin/vmi-writev" && !bytes.HasPrefix(e.data, []byte("#!/bin/sh\n")) {
			t.Errorf("%s does not start with #!/bin/sh", name)
		}
	}
	for _, a := range applets {
		if e := byName["bin/"+a]; string(e.data) != "busybox" || e.mode != 0o120777 {
			t.Errorf("applet link %s = %+v", a, e)
		}
	}
	if e := byName["bin/vmi-writev"]; string(e.data) != "\x7fELF fake vmi-writev" {
		t.Errorf("bin/vmi-writev = %q", e.data)
	}
	if e := byName["dev/console"]; e.mode != 0o020600 || e.rmaj != 5 || e.rmin != 1 {
		t.Errorf("dev/console = %+v", e)
	}
	// Reproducible: same inputs, same bytes.
	again, err := initramfsBytes([]byte("\x7fELF fake busybox"), []byte("\x7fELF fake vmi-writev"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(img, again) {
		t.Error("initramfs is not reproducible")
	}

	cpio, err := exec.LookPath("cpio")
	if err != nil {
		t.Skip("GNU cpio not installed; the Go reader above checked the archive")
	}
	cmd := exec.Command(cpio, "-it", "--quiet")
	cmd.Stdin = bytes.NewReader(raw)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -it: %v: %s", err, out)
	}
	listed := strings.Fields(string(out))
	if len(listed) != len(entries) {
		t.Fatalf("cpio lists %d entries, Go reader %d:\n%s", len(listed), len(entries), out)
	}
	for i, e := range entries {
		if listed[i] != e.name {
			t.Errorf("cpio entry %d = %q, want %q", i, listed[i], e.name)
		}
	}
}

// BenchmarkBuildInitramfs measures building the image around a 2 MiB
// stand-in for busybox (the real one is about 2 MiB) and a 1.4 MiB one for
// vmi-writev (the real one is about 1.4 MiB).
func BenchmarkBuildInitramfs(b *testing.B) {
	bb := bytes.Repeat([]byte("busybox\x00"), 256*1024)
	wv := bytes.Repeat([]byte("writev\x00"), 200*1024)
	b.ReportAllocs()
	for b.Loop() {
		if err := BuildInitramfs(io.Discard, bb, wv); err != nil {
			b.Fatal(err)
		}
	}
}
