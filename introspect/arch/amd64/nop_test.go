package amd64

import "testing"

func TestNopLen(t *testing.T) {
	for _, tc := range []struct {
		code []byte
		want int
	}{
		{[]byte{0x90, 0x55}, 1},
		{[]byte{0x66, 0x90}, 2},
		// Linux's ftrace site after boot, then push %r12.
		{[]byte{0x0f, 0x1f, 0x44, 0x00, 0x00, 0x41, 0x54}, 5},
		{[]byte{0x66, 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00}, 9},
		{[]byte{0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00}, 8},
		{[]byte{0x0f, 0x1f, 0x80, 0x00, 0x00, 0x00, 0x00}, 7},
		// The unpatched site: call __fentry__.
		{[]byte{0xe8, 0xdb, 0x13, 0xd2, 0xff}, 0},
		{[]byte{0xf3, 0x90}, 0},                   // PAUSE
		{[]byte{0xf3, 0x0f, 0x1e, 0xfa}, 0},       // ENDBR64: IBT state, not skipped
		{[]byte{0x0f, 0x1f, 0x44, 0x00}, 0},       // cut short
		{[]byte{0x0f, 0x1f, 0x44, 0x01, 0x00}, 0}, // a displacement: not a recommended form
		{[]byte{0x0f, 0x1f, 0x48, 0x00}, 0},       // reg field 1: not NOP
		{nil, 0},
	} {
		if got := NopLen(tc.code); got != tc.want {
			t.Errorf("NopLen(% x) = %d, want %d", tc.code, got, tc.want)
		}
	}
}

// FuzzNopLen: whatever the guest's code, the length fits in it and
// names a prefix that NopLen would accept again on its own.
func FuzzNopLen(f *testing.F) {
	for _, n := range nops {
		f.Add(n)
	}
	f.Add([]byte{0xf3, 0x90})
	f.Fuzz(func(t *testing.T, code []byte) {
		n := NopLen(code)
		if n < 0 || n > len(code) || n > MaxNopLen {
			t.Fatalf("NopLen(% x) = %d", code, n)
		}
		if n > 0 && NopLen(code[:n]) != n {
			t.Fatalf("NopLen(% x) = %d, but not on its own prefix", code, n)
		}
	})
}
