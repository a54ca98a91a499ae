package gdbstub

import (
	"errors"
	"fmt"
)

// DefaultMaxPacket bounds the size of a packet the client accepts, before
// and after decoding, so that a broken or hostile stub cannot make it
// allocate without limit.
const DefaultMaxPacket = 1 << 20

// ErrMalformed is returned (wrapped) for a packet that breaks the protocol.
var ErrMalformed = errors.New("malformed gdb packet")

// ErrTooLarge is returned (wrapped) for a packet above the size bound.
var ErrTooLarge = errors.New("gdb packet too large")

// checksum is the modulo-256 sum of the packet data as sent on the wire.
func checksum(p []byte) byte {
	var s byte
	for _, b := range p {
		s += b
	}
	return s
}

// appendPacket frames data as $data#cs. The data must not contain the
// framing characters; commands the client builds are plain ASCII.
func appendPacket(dst, data []byte) ([]byte, error) {
	for _, b := range data {
		switch b {
		case '$', '#', '}', '*':
			return dst, fmt.Errorf("command %q contains %q: %w", data, b, ErrMalformed)
		}
	}
	dst = append(dst, '$')
	dst = append(dst, data...)
	return fmt.Appendf(dst, "#%02x", checksum(data)), nil
}

// decodePayload undoes the escapes ('}' then the byte XOR 0x20) and the
// run-length encoding ('*' then a count byte n: the previous byte repeats
// n-29 more times) of a packet's data, as stubs send in replies. The result
// is at most max bytes.
func decodePayload(raw []byte, max int) ([]byte, error) {
	out := make([]byte, 0, min(len(raw), max))
	for i := 0; i < len(raw); i++ {
		b := raw[i]
		switch b {
		case '}':
			i++
			if i >= len(raw) {
				return nil, fmt.Errorf("escape at end of packet: %w", ErrMalformed)
			}
			b = raw[i] ^ 0x20
		case '*':
			i++
			if i >= len(raw) {
				return nil, fmt.Errorf("run-length marker at end of packet: %w", ErrMalformed)
			}
			if len(out) == 0 {
				return nil, fmt.Errorf("run-length marker without a byte to repeat: %w", ErrMalformed)
			}
			n := int(raw[i]) - 29
			// GDB never sends counts that would produce '#' or '$', nor
			// below 3; anything else is not a stub we understand.
			if n < 3 || raw[i] > 126 || raw[i] == '#' || raw[i] == '$' {
				return nil, fmt.Errorf("bad run-length count %q: %w", raw[i], ErrMalformed)
			}
			if len(out)+n > max {
				return nil, fmt.Errorf("decoded packet above %d bytes: %w", max, ErrTooLarge)
			}
			last := out[len(out)-1]
			for range n {
				out = append(out, last)
			}
			continue
		}
		if len(out) >= max {
			return nil, fmt.Errorf("decoded packet above %d bytes: %w", max, ErrTooLarge)
		}
		out = append(out, b)
	}
	return out, nil
}

// escapeBinary escapes data for a binary field of a command (X packets).
func escapeBinary(dst, data []byte) []byte {
	for _, b := range data {
		switch b {
		case '$', '#', '}', '*':
			dst = append(dst, '}', b^0x20)
		default:
			dst = append(dst, b)
		}
	}
	return dst
}

// unhex decodes hex digits; odd lengths and other characters are errors.
func unhex(s []byte) ([]byte, error) {
	if len(s)%2 != 0 {
		return nil, fmt.Errorf("odd hex length %d: %w", len(s), ErrMalformed)
	}
	out := make([]byte, len(s)/2)
	for i := range out {
		hi, ok1 := hexVal(s[2*i])
		lo, ok2 := hexVal(s[2*i+1])
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("bad hex %q: %w", s[2*i:2*i+2], ErrMalformed)
		}
		out[i] = hi<<4 | lo
	}
	return out, nil
}

func hexVal(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// parseHexUint parses a hex number of at most 16 digits.
func parseHexUint(s []byte) (uint64, error) {
	if len(s) == 0 || len(s) > 16 {
		return 0, fmt.Errorf("bad hex number %q: %w", s, ErrMalformed)
	}
	var v uint64
	for _, c := range s {
		d, ok := hexVal(c)
		if !ok {
			return 0, fmt.Errorf("bad hex number %q: %w", s, ErrMalformed)
		}
		v = v<<4 | uint64(d)
	}
	return v, nil
}
