// Package procerr describes how a child process ended, for errors: its
// exit status (or the signal that killed it) and the last lines of its
// standard error, so that "qemu exited: " never ends at the colon.
package procerr

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// TailLines is how many lines of stderr an error quotes.
const TailLines = 10

// maxTail bounds the quoted stderr in bytes, whatever the line lengths.
const maxTail = 2000

// Tail returns the last n non-empty lines of s, at most maxTail bytes.
func Tail(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	t := strings.TrimSpace(strings.Join(lines, "\n"))
	if len(t) > maxTail {
		t = "..." + t[len(t)-maxTail:]
	}
	return t
}

// Error returns an error saying that the process name ended: with the
// exit status or signal from ps (or waitErr), and the tail of stderr or
// "stderr empty". It wraps waitErr when there is one (an *exec.ExitError
// stays reachable with errors.As).
func Error(name string, ps *os.ProcessState, waitErr error, stderr string) error {
	status := "status unknown"
	var ee *exec.ExitError
	switch {
	case ps != nil:
		status = ps.String() // "exit status 1", "signal: killed"
	case errors.As(waitErr, &ee):
		status = ee.ProcessState.String()
	case waitErr != nil:
		status = waitErr.Error()
	}
	if ps != nil {
		status = fmt.Sprintf("%s (pid %d)", status, ps.Pid())
	}
	tail := Tail(stderr, TailLines)
	if tail == "" {
		tail = "stderr empty"
	} else {
		tail = "stderr:\n" + tail
	}
	if waitErr != nil {
		return fmt.Errorf("%s exited: %s; %s: %w", name, status, tail, waitErr)
	}
	return fmt.Errorf("%s exited: %s; %s", name, status, tail)
}
