package gdbstub

import (
	"bytes"
	"fmt"
	"strconv"
)

// Thread is a thread id of the remote protocol. QEMU's threads are vCPUs:
// process 1, thread cpu_index+1. Pid is zero when the stub does not speak
// the multiprocess extension. The values -1 (all) and 0 (any) are special.
type Thread struct {
	Pid int64
	Tid int64
}

// String formats the thread as the protocol expects it.
func (t Thread) String() string {
	id := func(v int64) string {
		if v < 0 {
			return "-1"
		}
		return strconv.FormatInt(v, 16)
	}
	if t.Pid != 0 {
		return "p" + id(t.Pid) + "." + id(t.Tid)
	}
	return id(t.Tid)
}

// parseThread parses "p<pid>.<tid>", "p<pid>" or "<tid>" (hex, or -1).
func parseThread(s []byte) (Thread, error) {
	num := func(b []byte) (int64, error) {
		if string(b) == "-1" {
			return -1, nil
		}
		v, err := parseHexUint(b)
		if err != nil {
			return 0, err
		}
		if v > 1<<62 {
			return 0, fmt.Errorf("thread id %q out of range: %w", b, ErrMalformed)
		}
		return int64(v), nil
	}
	if len(s) > 0 && s[0] == 'p' {
		pid, tid, hasTid := bytes.Cut(s[1:], []byte("."))
		p, err := num(pid)
		if err != nil {
			return Thread{}, err
		}
		t := int64(-1) // "p<pid>" alone means all its threads
		if hasTid {
			if t, err = num(tid); err != nil {
				return Thread{}, err
			}
		}
		return Thread{Pid: p, Tid: t}, nil
	}
	t, err := num(s)
	if err != nil {
		return Thread{}, err
	}
	return Thread{Tid: t}, nil
}

// StopKind classifies a stop reply.
type StopKind uint8

// Stop kinds.
const (
	// StopSignal: the target stopped with a signal (S or T packet).
	StopSignal StopKind = iota + 1
	// StopExited: the process exited (W packet).
	StopExited
	// StopTerminated: the process was killed by a signal (X packet).
	StopTerminated
)

// Stop is a parsed stop reply.
type Stop struct {
	Kind StopKind
	// Signal is the signal number (S, T, X) or exit status (W).
	Signal uint8
	// Thread is the stopping thread, when the stub named it.
	Thread    Thread
	HasThread bool
	// Reason is the stop reason key of a T packet: "swbreak", "hwbreak",
	// "watch", "rwatch", "awatch", ... or "" when none was given.
	Reason string
	// Addr is the data address of a watchpoint stop.
	Addr uint64
	// Regs holds register values a T packet carried, by register number,
	// in target byte order.
	Regs map[int][]byte
}

// maxStopRegs bounds the register values kept from one T packet.
const maxStopRegs = 256

// ParseStop parses a stop reply packet (already decoded). It is strict:
// anything it does not understand is an error, so that a broken stub is
// noticed rather than guessed at.
func ParseStop(p []byte) (*Stop, error) {
	if len(p) < 3 {
		return nil, fmt.Errorf("stop reply %q too short: %w", p, ErrMalformed)
	}
	sig, err := unhex(p[1:3])
	if err != nil {
		return nil, fmt.Errorf("stop reply %q: %w", p, err)
	}
	st := &Stop{Signal: sig[0]}
	switch p[0] {
	case 'S':
		if len(p) != 3 {
			return nil, fmt.Errorf("stop reply %q: trailing data: %w", p, ErrMalformed)
		}
		st.Kind = StopSignal
		return st, nil
	case 'W', 'X':
		st.Kind = StopExited
		if p[0] == 'X' {
			st.Kind = StopTerminated
		}
		rest := p[3:]
		if len(rest) > 0 {
			v, ok := bytes.CutPrefix(rest, []byte(";process:"))
			if !ok {
				return nil, fmt.Errorf("stop reply %q: %w", p, ErrMalformed)
			}
			pid, err := parseHexUint(v)
			if err != nil {
				return nil, fmt.Errorf("stop reply %q: %w", p, err)
			}
			st.Thread, st.HasThread = Thread{Pid: int64(pid & (1<<62 - 1)), Tid: -1}, true
		}
		return st, nil
	case 'T':
		st.Kind = StopSignal
	default:
		return nil, fmt.Errorf("not a stop reply: %q: %w", p, ErrMalformed)
	}
	rest := p[3:]
	for len(rest) > 0 {
		var pair []byte
		var found bool
		pair, rest, found = bytes.Cut(rest, []byte(";"))
		if !found {
			return nil, fmt.Errorf("stop reply %q: pair without ';': %w", p, ErrMalformed)
		}
		k, v, ok := bytes.Cut(pair, []byte(":"))
		if !ok || len(k) == 0 {
			return nil, fmt.Errorf("stop reply %q: bad pair %q: %w", p, pair, ErrMalformed)
		}
		switch string(k) {
		case "thread":
			t, err := parseThread(v)
			if err != nil {
				return nil, fmt.Errorf("stop reply %q: %w", p, err)
			}
			st.Thread, st.HasThread = t, true
		case "watch", "rwatch", "awatch":
			a, err := parseHexUint(v)
			if err != nil {
				return nil, fmt.Errorf("stop reply %q: %w", p, err)
			}
			st.Reason, st.Addr = string(k), a
		case "swbreak", "hwbreak", "library", "replaylog", "fork", "vfork", "vforkdone", "exec", "create", "syscall_entry", "syscall_return":
			st.Reason = string(k)
		case "core":
			if _, err := parseHexUint(v); err != nil {
				return nil, fmt.Errorf("stop reply %q: %w", p, err)
			}
		default:
			// A register number in hex. Other keys (letters beyond hex)
			// are extensions a client must ignore, per the protocol.
			n, err := parseHexUint(k)
			if err != nil {
				continue
			}
			val, err := unhex(v)
			if err != nil {
				return nil, fmt.Errorf("stop reply %q: register %q: %w", p, k, err)
			}
			if n > 0xffff {
				return nil, fmt.Errorf("stop reply %q: register number %q: %w", p, k, ErrMalformed)
			}
			if st.Regs == nil {
				st.Regs = make(map[int][]byte)
			}
			if len(st.Regs) >= maxStopRegs {
				return nil, fmt.Errorf("stop reply %q: too many registers: %w", p, ErrMalformed)
			}
			st.Regs[int(n)] = val
		}
	}
	return st, nil
}
