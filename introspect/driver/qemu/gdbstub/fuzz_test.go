package gdbstub

import (
	"bufio"
	"bytes"
	"errors"
	"log/slog"
	"net"
	"testing"
	"time"
)

// FuzzDecodePayload: arbitrary packet data decodes or errors, within the
// bound.
func FuzzDecodePayload(f *testing.F) {
	for _, s := range []string{"abc", "0* ", "a}]b", "x}\x03", "ab*!", "0*~0*~", "}", "*", "a*\x01"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		const max = 512
		out, err := decodePayload(raw, max)
		if err == nil && len(out) > max {
			t.Fatalf("decoded %d bytes above the bound %d", len(out), max)
		}
	})
}

// FuzzParseStop: arbitrary stop replies parse or error without panicking;
// what parses is consistent.
func FuzzParseStop(f *testing.F) {
	for _, s := range []string{"S05", "T05thread:p01.02;", "T05thread:02;swbreak:;", "T05watch:ffff8000;thread:1;",
		"T0510:0010000000000000;", "W00", "W01;process:1", "X09", "T05core:1;", "Tzz", "T05thread:p1.2"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		st, err := ParseStop(p)
		if err != nil {
			return
		}
		if st.Kind < StopSignal || st.Kind > StopTerminated {
			t.Fatalf("kind %d", st.Kind)
		}
		if len(st.Regs) > maxStopRegs {
			t.Fatalf("%d registers", len(st.Regs))
		}
	})
}

// FuzzReadPacket feeds an arbitrary byte stream to the client's packet
// reader: it returns packets, errors, or EOF, never panics or grows past
// its bound.
func FuzzReadPacket(f *testing.F) {
	f.Add([]byte("+$OK#9a"))
	f.Add([]byte("$T05thread:p01.02;#00$O68#cc"))
	f.Add([]byte("-$00*+#6f%Stop:T05#00"))
	f.Add(frame("m" + string(escapeBinary(nil, []byte("<xml>$#}*</xml>")))))
	f.Fuzz(func(t *testing.T, stream []byte) {
		a, b := net.Pipe()
		defer a.Close()
		go func() {
			// Drain acks the client writes.
			bufio.NewReader(b).WriteTo(discard{})
		}()
		c := &Client{conn: a, r: bufio.NewReader(bytes.NewReader(stream)), opt: Options{MaxPacket: 256, Timeout: time.Second}}
		c.log = slog.New(slog.DiscardHandler)
		for range 64 {
			p, err := c.readPacket()
			if err != nil {
				if c.broken != nil && !errors.Is(c.broken, ErrClosed) {
					t.Fatalf("broken without ErrClosed: %v", c.broken)
				}
				return
			}
			if len(p) > 256 {
				t.Fatalf("packet of %d bytes above the bound", len(p))
			}
		}
		b.Close()
	})
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// FuzzTargetDesc: arbitrary target XML (with includes resolving to the
// same document) parses or errors, bounded.
func FuzzTargetDesc(f *testing.F) {
	f.Add([]byte(`<target><architecture>i386:x86-64</architecture><xi:include href="a.xml"/></target>`))
	f.Add([]byte(`<target><feature name="x"><reg name="r" bitsize="64" regnum="3"/><reg name="s" bitsize="32"/></feature></target>`))
	f.Fuzz(func(t *testing.T, doc []byte) {
		td, err := ParseTargetDesc("target.xml", func(string) ([]byte, error) { return doc, nil })
		if err != nil {
			return
		}
		if len(td.Regs) > maxTdescRegs {
			t.Fatalf("%d registers", len(td.Regs))
		}
		for i, r := range td.Regs {
			if got, ok := td.Reg(r.Name); !ok || got != td.Regs[i] {
				t.Fatalf("lookup of %q inconsistent", r.Name)
			}
		}
	})
}
