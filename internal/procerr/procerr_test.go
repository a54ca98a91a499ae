package procerr

import (
	"bytes"
	"errors"
	"os/exec"
	"strings"
	"testing"
)

func run(t *testing.T, script string) error {
	t.Helper()
	cmd := exec.Command("sh", "-c", script)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	return Error("sh", cmd.ProcessState, err, stderr.String())
}

func TestError(t *testing.T) {
	err := run(t, `for i in $(seq 1 30); do echo "line $i" >&2; done; exit 3`)
	msg := err.Error()
	if !strings.Contains(msg, "exit status 3") || !strings.Contains(msg, "line 30") || strings.Contains(msg, "line 20\n") {
		t.Errorf("%s", msg)
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Error("the *exec.ExitError is not wrapped")
	}
	// A silent, successful exit still says so (before: "qemu exited: ").
	msg = run(t, `exit 0`).Error()
	if !strings.Contains(msg, "exit status 0") || !strings.Contains(msg, "stderr empty") {
		t.Errorf("%s", msg)
	}
	msg = run(t, `kill -9 $$`).Error()
	if !strings.Contains(msg, "signal: killed") {
		t.Errorf("%s", msg)
	}
}
