package xzcap

import (
	"bytes"
	"errors"
	"testing"

	"github.com/ulikunitz/xz"
)

func compress(t *testing.T, data []byte, dict int) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := xz.WriterConfig{DictCap: dict}.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestDict(t *testing.T) {
	good := compress(t, bytes.Repeat([]byte("kernel "), 1000), 8<<20)
	if err := Check(good, MaxDict); err != nil {
		t.Fatalf("a file of xz -6: %v", err)
	}
	two := append(bytes.Clone(good), append(make([]byte, 4), good...)...) // two streams, padded
	if err := Check(two, MaxDict); err != nil {
		t.Fatalf("two streams: %v", err)
	}
	bad, err := ForgeDict(good, 37)
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := Dict(bad); d != 3<<29 {
		t.Errorf("forged dictionary %d, want 1.5 GiB", d)
	}
	if err := Check(bad, MaxDict); err == nil {
		t.Error("1.5 GiB dictionary accepted")
	}
	for _, p := range [][]byte{nil, good[:30], append(bytes.Clone(good[:len(good)-2]), 'X', 'Y')} {
		if err := Check(p, MaxDict); !errors.Is(err, ErrFormat) {
			t.Errorf("malformed %d bytes: %v", len(p), err)
		}
	}
}

func FuzzDict(f *testing.F) {
	f.Add([]byte{})
	var buf bytes.Buffer
	w, _ := xz.NewWriter(&buf)
	w.Write([]byte("seed"))
	w.Close()
	f.Add(buf.Bytes())
	f.Fuzz(func(t *testing.T, p []byte) {
		Dict(p) // must not panic
	})
}
