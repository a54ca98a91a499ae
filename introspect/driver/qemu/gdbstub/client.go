// Package gdbstub is a client of the GDB remote serial protocol, written for
// QEMU's gdbstub: it attaches to a running guest over a unix or TCP socket,
// reads the target description, reads and writes registers and memory (also
// in QEMU's physical-memory mode), sets breakpoints, continues, single-steps
// one vCPU, waits for stop replies, and detaches.
//
// The client is strict and bounded: packets above a size limit, bad
// checksums (after retries) and replies it does not understand are errors.
// It works in all-stop mode: every command except Interrupt requires the
// target to be stopped.
package gdbstub

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ErrRunning is returned for a command sent while the target runs.
var ErrRunning = errors.New("target is running")

// ErrUnsupportedCmd is returned (wrapped) when the stub answers a command
// with an empty packet, the protocol's "not supported".
var ErrUnsupportedCmd = errors.New("command not supported by the stub")

// ErrClosed is returned after Close or after the connection broke.
var ErrClosed = errors.New("gdb connection closed")

// ErrorReply is an "Exx" error answer of the stub.
type ErrorReply struct {
	Cmd  string
	Code string
}

func (e *ErrorReply) Error() string { return fmt.Sprintf("gdb stub: %s: error %s", e.Cmd, e.Code) }

// Options tune a Client. The zero value is usable.
type Options struct {
	// Logger receives debug logs; nil discards them.
	Logger *slog.Logger
	// MaxPacket bounds the size of a received packet (DefaultMaxPacket).
	MaxPacket int
	// Timeout bounds each command/reply exchange (default 10s).
	Timeout time.Duration
	// Output receives console output (O packets) the stub sends while the
	// target runs. Nil drops it.
	Output func([]byte)
	// NoAckMode asks the stub to stop acknowledging packets when it
	// supports QStartNoAckMode (default true unless DisableNoAck).
	DisableNoAck bool
}

// Client is a connection to a gdbstub. Its methods are safe for concurrent
// use; they are serialized.
type Client struct {
	mu      sync.Mutex
	conn    net.Conn
	r       *bufio.Reader
	opt     Options
	log     *slog.Logger
	noAck   bool
	multi   bool
	pktSize int
	feats   map[string]string
	tdesc   *TargetDesc
	running bool
	broken  error
	wbuf    []byte
	thread  Thread // thread selected with Hg
	hasThr  bool
	phys    bool // qemu.PhyMemMode is on
	nregs   int  // registers in the reply to g
}

// Dial connects to a stub at address ("unix" path or "tcp" host:port) and
// performs the handshake.
func Dial(ctx context.Context, network, address string, opt Options) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, address)
	if err != nil {
		return nil, fmt.Errorf("gdb stub %s: %w", address, err)
	}
	c, err := NewClient(conn, opt)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

// NewClient takes over conn and performs the handshake: qSupported, no-ack
// mode when offered, and the target description when the stub has one.
func NewClient(conn net.Conn, opt Options) (*Client, error) {
	if opt.MaxPacket <= 0 {
		opt.MaxPacket = DefaultMaxPacket
	}
	if opt.Timeout <= 0 {
		opt.Timeout = 10 * time.Second
	}
	log := opt.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Client{conn: conn, r: bufio.NewReaderSize(conn, 64<<10), opt: opt, log: log, pktSize: 400}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.handshake(); err != nil {
		return nil, fmt.Errorf("gdb handshake: %w", err)
	}
	return c, nil
}

func (c *Client) handshake() error {
	rep, err := c.exchange("qSupported:multiprocess+;swbreak+;hwbreak+;xmlRegisters=i386;vContSupported+")
	if err != nil {
		return err
	}
	c.feats = make(map[string]string)
	for f := range strings.SplitSeq(string(rep), ";") {
		switch {
		case f == "":
		case strings.HasSuffix(f, "+"):
			c.feats[strings.TrimSuffix(f, "+")] = "+"
		case strings.HasSuffix(f, "-"):
		default:
			k, v, _ := strings.Cut(f, "=")
			c.feats[k] = v
		}
	}
	if v, ok := c.feats["PacketSize"]; ok {
		n, err := strconv.ParseUint(v, 16, 32)
		if err != nil || n < 64 {
			return fmt.Errorf("bad PacketSize %q: %w", v, ErrMalformed)
		}
		c.pktSize = int(min(n, uint64(c.opt.MaxPacket)))
	}
	c.multi = c.feats["multiprocess"] == "+"
	if c.feats["QStartNoAckMode"] == "+" && !c.opt.DisableNoAck {
		if err := c.expectOK("QStartNoAckMode"); err != nil {
			return err
		}
		c.noAck = true
	}
	// Ask why the target stopped: QEMU stops the guest when a debugger
	// connects, and this also tells whether it answers at all.
	rep, err = c.exchange("?")
	if err != nil {
		return err
	}
	if _, err := ParseStop(rep); err != nil {
		return fmt.Errorf("initial stop reply: %w", err)
	}
	if c.feats["qXfer:features:read"] == "+" {
		td, err := ParseTargetDesc("target.xml", c.readFeature)
		if err != nil {
			return err
		}
		c.tdesc = td
	}
	return nil
}

// Feature returns what qSupported said about a feature: "+" for a
// supported flag, a value for name=value, "" when absent.
func (c *Client) Feature(name string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.feats[name]
}

// NoAck reports whether the connection runs in no-ack mode.
func (c *Client) NoAck() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.noAck
}

// TargetDesc returns the target description, or nil when the stub has none.
func (c *Client) TargetDesc() *TargetDesc { return c.tdesc }

func (c *Client) readFeature(name string) ([]byte, error) {
	var out []byte
	for off := 0; ; {
		if len(out) > c.opt.MaxPacket {
			return nil, fmt.Errorf("feature %s above %d bytes: %w", name, c.opt.MaxPacket, ErrTooLarge)
		}
		rep, err := c.exchange(fmt.Sprintf("qXfer:features:read:%s:%x,%x", name, off, c.pktSize-8))
		if err != nil {
			return nil, err
		}
		if len(rep) == 0 {
			return nil, fmt.Errorf("qXfer %s: %w", name, ErrUnsupportedCmd)
		}
		if rep[0] == 'E' && len(rep) == 3 {
			return nil, &ErrorReply{Cmd: "qXfer:features:read:" + name, Code: string(rep[1:])}
		}
		if rep[0] != 'm' && rep[0] != 'l' {
			return nil, fmt.Errorf("qXfer %s: reply %q: %w", name, rep[:1], ErrMalformed)
		}
		out = append(out, rep[1:]...)
		off += len(rep) - 1
		if rep[0] == 'l' {
			return out, nil
		}
		if len(rep) == 1 {
			return nil, fmt.Errorf("qXfer %s: empty non-final chunk: %w", name, ErrMalformed)
		}
	}
}

// fail marks the connection broken; every later call returns err.
func (c *Client) fail(err error) error {
	if c.broken == nil {
		c.broken = fmt.Errorf("%w: %w", ErrClosed, err)
		c.conn.Close()
	}
	return err
}

// send writes one packet and, in ack mode, waits for its acknowledgement,
// retransmitting on '-' a bounded number of times.
func (c *Client) send(cmd string) error {
	if c.broken != nil {
		return c.broken
	}
	var err error
	c.wbuf, err = appendPacket(c.wbuf[:0], []byte(cmd))
	if err != nil {
		return err
	}
	for try := 0; ; try++ {
		c.conn.SetWriteDeadline(time.Now().Add(c.opt.Timeout))
		if _, err := c.conn.Write(c.wbuf); err != nil {
			return c.fail(fmt.Errorf("write %q: %w", cmd, err))
		}
		if c.noAck {
			return nil
		}
		c.conn.SetReadDeadline(time.Now().Add(c.opt.Timeout))
		b, err := c.readAck()
		if err != nil {
			return c.fail(fmt.Errorf("read ack of %q: %w", cmd, err))
		}
		switch b {
		case '+':
			return nil
		case '-':
			if try >= 3 {
				return c.fail(fmt.Errorf("stub rejected %q %d times: %w", cmd, try+1, ErrMalformed))
			}
			c.log.Debug("gdb: stub asked for retransmission", "cmd", cmd)
		default:
			return c.fail(fmt.Errorf("expected ack of %q, got %q: %w", cmd, b, ErrMalformed))
		}
	}
}

// readAck reads the stub's ack byte. QEMU 7.2 sends a stop reply of its own
// when a debugger connects (it stops the guest), before acking the first
// command: such a stop reply is taken and dropped ('?' asks again).
func (c *Client) readAck() (byte, error) {
	for range 4 {
		b, err := c.r.ReadByte()
		if err != nil || b != '$' {
			return b, err
		}
		if err := c.unsolicited(); err != nil {
			return 0, err
		}
	}
	return 0, fmt.Errorf("too many unsolicited packets: %w", ErrMalformed)
}

// unsolicited reads a packet that arrived unasked while an ack was due;
// only a stop reply is acceptable there.
func (c *Client) unsolicited() error {
	raw, ok, err := c.readBody()
	if err != nil {
		return c.fail(fmt.Errorf("unsolicited packet: %w", err))
	}
	if !ok {
		return c.fail(fmt.Errorf("unsolicited packet with bad checksum: %w", ErrMalformed))
	}
	if _, err := c.conn.Write([]byte{'+'}); err != nil {
		return c.fail(err)
	}
	if _, err := ParseStop(raw); err != nil {
		return c.fail(fmt.Errorf("unsolicited packet %.40q: %w", raw, err))
	}
	c.log.Debug("gdb: unsolicited stop reply", "packet", string(raw))
	return nil
}

// readPacket reads one packet and returns its decoded data. Stray acks are
// skipped; in ack mode a bad checksum is answered with '-' (a bounded
// number of times) and the stub's retransmission read. Deadlines are the
// caller's.
func (c *Client) readPacket() ([]byte, error) {
	for naks := 0; ; {
		b, err := c.r.ReadByte()
		if err != nil {
			return nil, err
		}
		switch b {
		case '$':
		case '+', '-':
			continue // late or duplicate acks
		case '%':
			// A non-stop notification; we run all-stop, so read and drop it.
			if _, _, err := c.readBody(); err != nil {
				return nil, err
			}
			continue
		default:
			return nil, c.fail(fmt.Errorf("unexpected byte %q between packets: %w", b, ErrMalformed))
		}
		raw, ok, err := c.readBody()
		if err != nil {
			return nil, err
		}
		if !ok {
			if c.noAck {
				return nil, c.fail(fmt.Errorf("bad checksum in no-ack mode: %w", ErrMalformed))
			}
			naks++
			if naks > 3 {
				return nil, c.fail(fmt.Errorf("%d packets with bad checksums: %w", naks, ErrMalformed))
			}
			if _, err := c.conn.Write([]byte{'-'}); err != nil {
				return nil, c.fail(err)
			}
			continue
		}
		if !c.noAck {
			if _, err := c.conn.Write([]byte{'+'}); err != nil {
				return nil, c.fail(err)
			}
		}
		data, err := decodePayload(raw, c.opt.MaxPacket)
		if err != nil {
			return nil, c.fail(err)
		}
		return data, nil
	}
}

// readBody reads the rest of a packet after its start byte: data up to '#'
// and the two checksum digits. ok is false when the checksum is wrong.
func (c *Client) readBody() (raw []byte, ok bool, err error) {
	var buf []byte
	for {
		chunk, err := c.r.ReadSlice('#')
		if len(buf)+len(chunk) > c.opt.MaxPacket+1 {
			return nil, false, c.fail(fmt.Errorf("packet above %d bytes: %w", c.opt.MaxPacket, ErrTooLarge))
		}
		buf = append(buf, chunk...)
		if err == nil {
			break
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return nil, false, err
		}
	}
	raw = buf[:len(buf)-1]
	if i := bytes.IndexByte(raw, '$'); i >= 0 {
		return nil, false, c.fail(fmt.Errorf("'$' inside a packet: %w", ErrMalformed))
	}
	var cs [2]byte
	if _, err := io.ReadFull(c.r, cs[:]); err != nil {
		return nil, false, err
	}
	want, err := unhex(cs[:])
	if err != nil {
		return nil, false, c.fail(fmt.Errorf("packet checksum %q: %w", cs, err))
	}
	return raw, want[0] == checksum(raw), nil
}

// exchange sends a command and returns its reply, skipping console output.
func (c *Client) exchange(cmd string) ([]byte, error) {
	if c.broken != nil {
		return nil, c.broken
	}
	if c.running {
		return nil, fmt.Errorf("%s: %w", cmd, ErrRunning)
	}
	if err := c.send(cmd); err != nil {
		return nil, err
	}
	c.conn.SetReadDeadline(time.Now().Add(c.opt.Timeout))
	for {
		rep, err := c.readPacket()
		if err != nil {
			return nil, c.fail(fmt.Errorf("reply to %q: %w", cmd, err))
		}
		if isOutput(rep) && !strings.HasPrefix(cmd, "qXfer") {
			c.output(rep[1:])
			continue
		}
		return rep, nil
	}
}

// isOutput reports whether a packet is console output: 'O' and hex data.
// "OK" is not: 'K' is no hex digit.
func isOutput(p []byte) bool {
	if len(p) < 3 || p[0] != 'O' || len(p)%2 != 1 {
		return false
	}
	_, err := unhex(p[1:])
	return err == nil
}

func (c *Client) output(hexdata []byte) {
	b, _ := unhex(hexdata) // checked by isOutput
	if c.opt.Output != nil {
		c.opt.Output(b)
	}
}

// check turns an empty or Exx reply into an error.
func check(cmd string, rep []byte) error {
	if len(rep) == 0 {
		return fmt.Errorf("%s: %w", cmd, ErrUnsupportedCmd)
	}
	if rep[0] == 'E' && len(rep) == 3 {
		if _, err := unhex(rep[1:]); err == nil {
			return &ErrorReply{Cmd: cmd, Code: string(rep[1:])}
		}
	}
	return nil
}

func (c *Client) expectOK(cmd string) error {
	rep, err := c.exchange(cmd)
	if err != nil {
		return err
	}
	if err := check(cmd, rep); err != nil {
		return err
	}
	if string(rep) != "OK" {
		return fmt.Errorf("%s: reply %q: %w", cmd, rep, ErrMalformed)
	}
	return nil
}

// Command sends a raw command and returns the reply. An Exx reply or an
// empty reply (unsupported) is an error.
func (c *Client) Command(cmd string) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	rep, err := c.exchange(cmd)
	if err != nil {
		return nil, err
	}
	if err := check(cmd, rep); err != nil {
		return nil, err
	}
	return rep, nil
}
