package gdbstub

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeStub plays QEMU's side of the protocol over a pipe. handle answers
// each command; it may call reply any number of times.
type fakeStub struct {
	t          *testing.T
	conn       net.Conn
	r          *bufio.Reader
	noAck      bool
	offerNoAck bool
	// nakOnce makes the stub reject the first transmission of these
	// commands with '-'.
	nakOnce map[string]bool
	handle  func(s *fakeStub, cmd string)
	// greetStop makes the stub send a stop reply before acking the first
	// command, as QEMU 7.2 does when a debugger connects.
	greetStop bool

	mu   sync.Mutex
	seen []string
}

func frame(data string) []byte {
	return fmt.Appendf(nil, "$%s#%02x", data, checksum([]byte(data)))
}

// reply sends data (already escaped or run-length encoded as wanted) and,
// in ack mode, reads the client's ack.
func (s *fakeStub) reply(data string) {
	s.raw(frame(data))
}

func (s *fakeStub) raw(p []byte) {
	if _, err := s.conn.Write(p); err != nil {
		return
	}
	if !s.noAck {
		b, err := s.r.ReadByte()
		if err != nil {
			return
		}
		if b == '-' { // resend once
			s.conn.Write(p)
			s.r.ReadByte()
		}
	}
}

func (s *fakeStub) serve() {
	defer s.conn.Close()
	for {
		b, err := s.r.ReadByte()
		if err != nil {
			return
		}
		switch b {
		case '+', '-':
			continue
		case 0x03:
			s.record("\x03")
			s.handle(s, "\x03")
			continue
		case '$':
		default:
			s.t.Errorf("stub: unexpected byte %q", b)
			return
		}
		body, err := s.r.ReadString('#')
		if err != nil {
			return
		}
		var cs [2]byte
		if _, err := s.r.Read(cs[:1]); err != nil {
			return
		}
		if _, err := s.r.Read(cs[1:]); err != nil {
			return
		}
		cmd := strings.TrimSuffix(body, "#")
		if fmt.Sprintf("%02x", checksum([]byte(cmd))) != string(cs[:]) {
			s.t.Errorf("stub: bad checksum on %q", cmd)
		}
		if s.nakOnce[cmd] {
			delete(s.nakOnce, cmd)
			s.record("NAK " + cmd)
			s.conn.Write([]byte{'-'})
			continue
		}
		if s.greetStop {
			s.greetStop = false
			s.conn.Write(frame("T02thread:01;"))
			if b, _ := s.r.ReadByte(); b != '+' {
				s.t.Errorf("unsolicited stop acked with %q", b)
			}
		}
		if !s.noAck {
			s.conn.Write([]byte{'+'})
		}
		s.record(cmd)
		switch {
		case strings.HasPrefix(cmd, "qSupported"):
			f := "PacketSize=1000;qXfer:features:read+;vContSupported+;multiprocess+"
			if s.offerNoAck {
				f += ";QStartNoAckMode+"
			}
			s.reply(f)
		case cmd == "QStartNoAckMode":
			s.reply("OK")
			s.noAck = true
		case strings.HasPrefix(cmd, "Hg"):
			s.reply("OK")
		case cmd == "?":
			s.reply("T05thread:p01.01;")
		case strings.HasPrefix(cmd, "qXfer:features:read:"):
			s.xfer(cmd)
		default:
			s.handle(s, cmd)
		}
	}
}

func (s *fakeStub) record(cmd string) {
	s.mu.Lock()
	s.seen = append(s.seen, cmd)
	s.mu.Unlock()
}

func (s *fakeStub) commands() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.seen...)
}

// xfer serves the QEMU 10 target description from testdata, in chunks.
func (s *fakeStub) xfer(cmd string) {
	var name string
	var off, n int
	rest := strings.TrimPrefix(cmd, "qXfer:features:read:")
	i := strings.LastIndexByte(rest, ':')
	name = rest[:i]
	fmt.Sscanf(rest[i+1:], "%x,%x", &off, &n)
	files := map[string]string{"target.xml": "testdata/qemu10-target.xml", "i386-64bit.xml": "testdata/qemu10-i386-64bit.xml"}
	data, err := os.ReadFile(files[name])
	if err != nil {
		s.reply("E00")
		return
	}
	n = min(n, 700) // smaller than asked, as stubs may do
	if off >= len(data) {
		s.reply("l")
		return
	}
	chunk := data[off:min(off+n, len(data))]
	kind := "m"
	if off+len(chunk) == len(data) {
		kind = "l"
	}
	s.reply(kind + string(escapeBinary(nil, chunk)))
}

func newPair(t *testing.T, st *fakeStub, opt Options) *Client {
	t.Helper()
	cli, srv := net.Pipe()
	st.t, st.conn, st.r = t, srv, bufio.NewReader(srv)
	if st.handle == nil {
		st.handle = func(s *fakeStub, cmd string) { s.reply("") }
	}
	go st.serve()
	if opt.Timeout == 0 {
		opt.Timeout = 5 * time.Second
	}
	c, err := NewClient(cli, opt)
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestHandshakeAndTargetDesc(t *testing.T) {
	for _, noack := range []bool{false, true} {
		t.Run(fmt.Sprint("noack=", noack), func(t *testing.T) {
			st := &fakeStub{offerNoAck: noack}
			c := newPair(t, st, Options{})
			if c.NoAck() != noack {
				t.Errorf("NoAck = %v", c.NoAck())
			}
			td := c.TargetDesc()
			if td == nil || td.Architecture != "i386:x86-64" {
				t.Fatalf("target description %+v", td)
			}
			want := map[string][2]int{ // name: number, offset in g
				"rax": {0, 0}, "rip": {16, 128}, "eflags": {17, 136}, "cs": {18, 140},
				"fs_base": {24, 164}, "gs_base": {25, 172}, "k_gs_base": {26, 180},
				"cr0": {27, 188}, "cr3": {29, 204}, "cr4": {30, 212}, "cr8": {31, 220}, "efer": {32, 228},
			}
			for name, w := range want {
				r, ok := td.Reg(name)
				if !ok || r.Num != w[0] || r.Offset != w[1] {
					t.Errorf("%s = %+v %v, want num %d offset %d", name, r, ok, w[0], w[1])
				}
			}
			// Registers commented out in QEMU's XML must not count.
			if _, ok := td.Reg("cs_base"); ok {
				t.Error("commented-out cs_base parsed")
			}
			if len(td.Regs) != 66 {
				t.Errorf("%d registers, want QEMU's 66", len(td.Regs))
			}
		})
	}
}

func TestRetransmitOnNAK(t *testing.T) {
	st := &fakeStub{nakOnce: map[string]bool{"qfThreadInfo": true}}
	st.handle = func(s *fakeStub, cmd string) {
		switch cmd {
		case "qfThreadInfo":
			s.reply("mp01.01,p01.02")
		case "qsThreadInfo":
			s.reply("l")
		}
	}
	c := newPair(t, st, Options{})
	th, err := c.Threads()
	if err != nil {
		t.Fatal(err)
	}
	if len(th) != 2 || th[1] != (Thread{Pid: 1, Tid: 2}) {
		t.Errorf("threads %v", th)
	}
	cmds := strings.Join(st.commands(), "|")
	if !strings.Contains(cmds, "NAK qfThreadInfo|qfThreadInfo") {
		t.Errorf("no retransmission: %s", cmds)
	}
}

func TestUnsolicitedStopAtConnect(t *testing.T) {
	c := newPair(t, &fakeStub{greetStop: true}, Options{})
	if c.TargetDesc() == nil {
		t.Fatal("no target description after an unsolicited stop")
	}
}

func TestBadChecksumFromStub(t *testing.T) {
	st := &fakeStub{}
	st.handle = func(s *fakeStub, cmd string) {
		if cmd == "p10" {
			bad := frame("1122334455667788")
			bad[len(bad)-1] ^= 1
			// The stub resends on '-' (raw reads the NAK and resends
			// the same bad bytes once); send a good copy afterwards.
			s.conn.Write(bad)
			s.r.ReadByte() // '-'
			s.reply("1122334455667788")
		}
	}
	c := newPair(t, st, Options{})
	v, err := c.ReadRegister(Thread{Pid: 1, Tid: 1}, 16)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(v, []byte{0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88}) {
		t.Errorf("value %x", v)
	}
}

func TestRunLengthEscapesAndSplitPackets(t *testing.T) {
	st := &fakeStub{offerNoAck: true}
	st.handle = func(s *fakeStub, cmd string) {
		switch cmd {
		case "Qqemu.PhyMemMode:1":
			s.reply("OK")
		case "m1000,8":
			// "00" then 14 more '0' by run-length ('*' then ' '+11 =
			// 43-29 = 14), written one byte at a time.
			for _, b := range frame("00*+") {
				s.conn.Write([]byte{b})
			}
		case "m2000,4":
			// Escaped '}' and '#' inside hex are not hex: error.
			s.reply("}]}\x03ab")
		}
	}
	c := newPair(t, st, Options{})
	buf := make([]byte, 8)
	if err := c.ReadPhysical(0x1000, buf); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf, make([]byte, 8)) {
		t.Errorf("got %x", buf)
	}
	if err := c.ReadPhysical(0x2000, make([]byte, 4)); !errors.Is(err, ErrMalformed) {
		t.Errorf("non-hex reply: %v", err)
	}
}

func TestErrorsAndUnsupported(t *testing.T) {
	st := &fakeStub{}
	st.handle = func(s *fakeStub, cmd string) {
		switch {
		case strings.HasPrefix(cmd, "Z0"):
			s.reply("E01")
		case strings.HasPrefix(cmd, "Z1"):
			s.reply("")
		}
	}
	c := newPair(t, st, Options{})
	var er *ErrorReply
	if err := c.InsertBreakpoint(SoftwareBreakpoint, 0x1000, 1); !errors.As(err, &er) || er.Code != "01" {
		t.Errorf("E01: %v", err)
	}
	if err := c.InsertBreakpoint(HardwareBreakpoint, 0x1000, 1); !errors.Is(err, ErrUnsupportedCmd) {
		t.Errorf("empty reply: %v", err)
	}
	// The connection is still usable after error replies.
	if err := c.InsertBreakpoint(SoftwareBreakpoint, 0x2000, 1); !errors.As(err, &er) {
		t.Errorf("after errors: %v", err)
	}
}

func TestOversizedPacket(t *testing.T) {
	st := &fakeStub{offerNoAck: true}
	st.handle = func(s *fakeStub, cmd string) {
		if cmd == "g" {
			s.reply(strings.Repeat("00", 8192))
		}
	}
	c := newPair(t, st, Options{MaxPacket: 12000})
	if _, err := c.ReadRegisters(Thread{Pid: 1, Tid: 1}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized reply: %v", err)
	}
	if _, err := c.ReadRegisters(Thread{Pid: 1, Tid: 1}); !errors.Is(err, ErrClosed) {
		t.Errorf("after a protocol error the client must refuse: %v", err)
	}
}

func TestContinueUnpromptedStopAndOutput(t *testing.T) {
	release := make(chan struct{})
	// No-ack mode: the stub's reply goroutine must not race the serve
	// loop for acks.
	st := &fakeStub{offerNoAck: true}
	st.handle = func(s *fakeStub, cmd string) {
		switch cmd {
		case "vCont;c":
			go func() {
				<-release
				s.reply("O" + fmt.Sprintf("%x", "hello\n"))
				s.reply("T05thread:p01.02;")
			}()
		case "vCont;s:p1.2":
			s.reply("T05thread:p01.02;")
		case "g":
			s.reply(strings.Repeat("00", 608))
		}
	}
	var out bytes.Buffer
	c := newPair(t, st, Options{Output: func(b []byte) { out.Write(b) }})
	if err := c.Continue(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ReadRegisters(Thread{Pid: 1, Tid: 2}); !errors.Is(err, ErrRunning) {
		t.Errorf("command while running: %v", err)
	}
	close(release)
	stop, err := c.Wait(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if stop.Kind != StopSignal || stop.Signal != 5 || stop.Thread != (Thread{Pid: 1, Tid: 2}) {
		t.Errorf("stop %+v", stop)
	}
	if out.String() != "hello\n" {
		t.Errorf("console output %q", out.String())
	}
	if _, err := c.ReadRegisters(Thread{Pid: 1, Tid: 2}); err != nil {
		t.Errorf("registers after stop: %v", err)
	}
	stop, err = c.Step(Thread{Pid: 1, Tid: 2})
	if err != nil || stop.Thread.Tid != 2 {
		t.Errorf("step: %+v %v", stop, err)
	}
}

func TestInterrupt(t *testing.T) {
	st := &fakeStub{}
	st.handle = func(s *fakeStub, cmd string) {
		switch cmd {
		case "vCont;c":
		case "\x03":
			s.reply("T02thread:p01.01;")
		case "D;1":
			s.reply("OK")
		}
	}
	c := newPair(t, st, Options{})
	if err := c.Continue(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	stop, err := c.Wait(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || stop == nil || stop.Signal != 2 {
		t.Fatalf("interrupted wait: %+v %v", stop, err)
	}
	if c.Running() {
		t.Error("still running after interrupt")
	}
	// Detach while running interrupts first.
	if err := c.Continue(); err != nil {
		t.Fatal(err)
	}
	if err := c.Detach(); err != nil {
		t.Fatal(err)
	}
	cmds := st.commands()
	if cmds[len(cmds)-1] != "D;1" || cmds[len(cmds)-2] != "\x03" {
		t.Errorf("commands %q", cmds)
	}
	if err := c.Detach(); !errors.Is(err, ErrClosed) {
		t.Errorf("second detach: %v", err)
	}
}

func TestParseStop(t *testing.T) {
	good := map[string]Stop{
		"S05":                         {Kind: StopSignal, Signal: 5},
		"T05thread:p01.02;":           {Kind: StopSignal, Signal: 5, Thread: Thread{1, 2}, HasThread: true},
		"T05thread:02;swbreak:;":      {Kind: StopSignal, Signal: 5, Thread: Thread{0, 2}, HasThread: true, Reason: "swbreak"},
		"T05watch:ffff8000;thread:1;": {Kind: StopSignal, Signal: 5, Reason: "watch", Addr: 0xffff8000, Thread: Thread{0, 1}, HasThread: true},
		"T0510:0010000000000000;":     {Kind: StopSignal, Signal: 5},
		"T05foo:bar;":                 {Kind: StopSignal, Signal: 5},
		"W00":                         {Kind: StopExited},
		"W01;process:1":               {Kind: StopExited, Signal: 1, Thread: Thread{1, -1}, HasThread: true},
		"X09":                         {Kind: StopTerminated, Signal: 9},
	}
	for in, want := range good {
		got, err := ParseStop([]byte(in))
		if err != nil {
			t.Errorf("%q: %v", in, err)
			continue
		}
		got.Regs = nil
		if fmt.Sprint(*got) != fmt.Sprint(want) {
			t.Errorf("%q = %+v, want %+v", in, *got, want)
		}
	}
	st, _ := ParseStop([]byte("T0510:0010000000000000;"))
	if !bytes.Equal(st.Regs[16], []byte{0, 0x10, 0, 0, 0, 0, 0, 0}) {
		t.Errorf("register in stop: %x", st.Regs)
	}
	for _, bad := range []string{"", "T", "T5", "Tzz", "S05x", "T05thread:zz;", "T05thread:p1.2", "W00;pid:1", "OK", "E01", "T0510:abc;"} {
		if _, err := ParseStop([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestDecodePayload(t *testing.T) {
	cases := map[string]string{
		"abc":    "abc",
		"0* ":    "0000",
		"a}]b":   "a}b",
		"x}\x03": "x#",
		"1*\"2":  "1111112",
		"ab*!":   "abbbbb",
	}
	for in, want := range cases {
		got, err := decodePayload([]byte(in), 100)
		if err != nil || string(got) != want {
			t.Errorf("%q = %q %v, want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"}", "*", "a*", "a*\x01", "a*#"} {
		if _, err := decodePayload([]byte(bad), 100); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if _, err := decodePayload([]byte("0*~0*~"), 100); !errors.Is(err, ErrTooLarge) {
		t.Errorf("run-length above the bound: %v", err)
	}
}
