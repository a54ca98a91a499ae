// Package qmp is a small client of the QEMU Machine Protocol: it negotiates
// capabilities, executes commands with ids, and hands asynchronous events
// (STOP, RESUME, SHUTDOWN, ...) to a channel or drops them.
package qmp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// maxLine bounds one QMP message.
const maxLine = 1 << 20

// Event is an asynchronous QMP event.
type Event struct {
	Event     string          `json:"event"`
	Data      json.RawMessage `json:"data"`
	Timestamp struct {
		Seconds      int64 `json:"seconds"`
		Microseconds int64 `json:"microseconds"`
	} `json:"timestamp"`
}

// Error is an error answer of QEMU.
type Error struct {
	Cmd   string
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (e *Error) Error() string { return fmt.Sprintf("qmp %s: %s: %s", e.Cmd, e.Class, e.Desc) }

// Client is a QMP connection. Execute is safe for concurrent use.
type Client struct {
	conn    net.Conn
	sc      *bufio.Scanner
	mu      sync.Mutex
	id      uint64
	timeout time.Duration
	events  chan<- Event
	onEvent func(Event)
	// Version is QEMU's version from the greeting.
	Version struct {
		Major, Minor, Micro int
	}
}

// Options tune a Client.
type Options struct {
	// Events receives asynchronous events; nil drops them. Sends never
	// block: events are dropped when the channel is full.
	Events chan<- Event
	// OnEvent, when set, is called with every event, before Events gets
	// it, from the goroutine whose command read it: it must be quick and
	// must not call the Client. Unlike Events it drops nothing. QEMU sends
	// events as they happen, and they are read with the next command's
	// reply, so a caller that wants them promptly runs a cheap command
	// (query-status) now and then.
	OnEvent func(Event)
	// Timeout bounds each command (default 10s).
	Timeout time.Duration
}

// Dial connects to QMP at address ("unix" path or "tcp" host:port) and
// negotiates capabilities.
func Dial(ctx context.Context, network, address string, opt Options) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, address)
	if err != nil {
		return nil, fmt.Errorf("qmp %s: %w", address, err)
	}
	c, err := NewClient(conn, opt)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

// NewClient takes over conn: it reads the greeting and sends
// qmp_capabilities.
func NewClient(conn net.Conn, opt Options) (*Client, error) {
	if opt.Timeout <= 0 {
		opt.Timeout = 10 * time.Second
	}
	sc := bufio.NewScanner(conn)
	sc.Buffer(make([]byte, 0, 64<<10), maxLine)
	c := &Client{conn: conn, sc: sc, timeout: opt.Timeout, events: opt.Events, onEvent: opt.OnEvent}
	conn.SetReadDeadline(time.Now().Add(opt.Timeout))
	var greet struct {
		QMP *struct {
			Version struct {
				QEMU struct{ Major, Minor, Micro int } `json:"qemu"`
			} `json:"version"`
		} `json:"QMP"`
	}
	if !sc.Scan() {
		return nil, fmt.Errorf("qmp greeting: %w", scanErr(sc))
	}
	if err := json.Unmarshal(sc.Bytes(), &greet); err != nil || greet.QMP == nil {
		return nil, fmt.Errorf("qmp greeting %.80q: not a QMP greeting", sc.Bytes())
	}
	v := greet.QMP.Version.QEMU
	c.Version.Major, c.Version.Minor, c.Version.Micro = v.Major, v.Minor, v.Micro
	if err := c.Execute("qmp_capabilities", nil, nil); err != nil {
		return nil, err
	}
	return c, nil
}

func scanErr(sc *bufio.Scanner) error {
	if err := sc.Err(); err != nil {
		return err
	}
	return errors.New("connection closed")
}

// Execute runs cmd with args (nil for none) and decodes its return value
// into ret (nil to discard). Events that arrive meanwhile are delivered.
func (c *Client) Execute(cmd string, args, ret any) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.id++
	id := fmt.Sprintf("vmi-%d", c.id)
	req := struct {
		Execute   string `json:"execute"`
		Arguments any    `json:"arguments,omitempty"`
		ID        string `json:"id"`
	}{cmd, args, id}
	b, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("qmp %s: %w", cmd, err)
	}
	c.conn.SetDeadline(time.Now().Add(c.timeout))
	if _, err := c.conn.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("qmp %s: %w", cmd, err)
	}
	for {
		if !c.sc.Scan() {
			return fmt.Errorf("qmp %s: %w", cmd, scanErr(c.sc))
		}
		var msg struct {
			Return json.RawMessage `json:"return"`
			Error  *Error          `json:"error"`
			Event  string          `json:"event"`
			ID     json.RawMessage `json:"id"`
		}
		line := c.sc.Bytes()
		if err := json.Unmarshal(line, &msg); err != nil {
			return fmt.Errorf("qmp %s: bad message %.80q: %w", cmd, line, err)
		}
		if msg.Event != "" {
			c.deliver(line)
			continue
		}
		var gotID string
		if err := json.Unmarshal(msg.ID, &gotID); err != nil || gotID != id {
			return fmt.Errorf("qmp %s: reply for id %s, want %s", cmd, msg.ID, id)
		}
		if msg.Error != nil {
			msg.Error.Cmd = cmd
			return msg.Error
		}
		if msg.Return == nil {
			return fmt.Errorf("qmp %s: reply without return", cmd)
		}
		if ret != nil {
			if err := json.Unmarshal(msg.Return, ret); err != nil {
				return fmt.Errorf("qmp %s: decode return: %w", cmd, err)
			}
		}
		return nil
	}
}

func (c *Client) deliver(line []byte) {
	if c.events == nil && c.onEvent == nil {
		return
	}
	var ev Event
	if json.Unmarshal(line, &ev) != nil {
		return
	}
	if c.onEvent != nil {
		c.onEvent(ev)
	}
	if c.events == nil {
		return
	}
	select {
	case c.events <- ev:
	default:
	}
}

// Status is the reply of query-status.
type Status struct {
	Running bool   `json:"running"`
	Status  string `json:"status"`
}

// QueryStatus returns whether the guest runs.
func (c *Client) QueryStatus() (Status, error) {
	var s Status
	err := c.Execute("query-status", nil, &s)
	return s, err
}

// Stop pauses every vCPU.
func (c *Client) Stop() error { return c.Execute("stop", nil, nil) }

// Cont resumes every vCPU.
func (c *Client) Cont() error { return c.Execute("cont", nil, nil) }

// CPU is an entry of query-cpus-fast.
type CPU struct {
	Index    int    `json:"cpu-index"`
	ThreadID int    `json:"thread-id"`
	QOMPath  string `json:"qom-path"`
	Target   string `json:"target"`
}

// QueryCPUs lists the vCPUs (query-cpus-fast).
func (c *Client) QueryCPUs() ([]CPU, error) {
	var cpus []CPU
	err := c.Execute("query-cpus-fast", nil, &cpus)
	return cpus, err
}

// HumanMonitorCommand runs an HMP command and returns its output.
func (c *Client) HumanMonitorCommand(line string) (string, error) {
	var out string
	err := c.Execute("human-monitor-command", map[string]string{"command-line": line}, &out)
	return out, err
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }
