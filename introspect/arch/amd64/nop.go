package amd64

import "bytes"

// MaxNopLen is the length of the longest NOP that NopLen recognises.
const MaxNopLen = 9

// nops are the recommended multi-byte NOP sequences of the Intel SDM
// (Vol. 2B, NOP), which are also the kernel's "ideal nops" (x86_nops) and
// the form Linux patches its ftrace call sites (call __fentry__) into at
// boot. The 0F 1F forms take a memory operand that is never accessed.
var nops = [MaxNopLen][]byte{
	{0x90},
	{0x66, 0x90},
	{0x0f, 0x1f, 0x00},
	{0x0f, 0x1f, 0x40, 0x00},
	{0x0f, 0x1f, 0x44, 0x00, 0x00},
	{0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00},
	{0x0f, 0x1f, 0x80, 0x00, 0x00, 0x00, 0x00},
	{0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00},
	{0x66, 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00},
}

// NopLen returns the length of the NOP instruction that code starts with,
// or 0 if code does not start with one of the recommended NOP forms (or
// is too short to hold it). Executing such an instruction changes nothing
// but RIP, so a debugger may move RIP past it instead of single-stepping.
//
// Only exact forms are matched: a prefix such as F3 (F3 90 is PAUSE) or
// an unusual encoding gives 0, and the caller steps as usual.
func NopLen(code []byte) int {
	for _, n := range nops {
		if bytes.HasPrefix(code, n) {
			return len(n)
		}
	}
	return 0
}
