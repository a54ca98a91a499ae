package ratelog

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// A flood of records costs one line per interval, and the next line says
// how many were left out.
func TestLoggerLimitsRate(t *testing.T) {
	var buf bytes.Buffer
	l := New(slog.New(slog.NewTextHandler(&buf, nil)), time.Second)
	now := time.Unix(1000, 0)
	l.now = func() time.Time { return now }
	for range 1000 {
		l.Warn("parent mismatch", "pid", 4)
	}
	now = now.Add(2 * time.Second)
	l.Warn("parent mismatch", "pid", 5)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines:\n%s", len(lines), buf.String())
	}
	if !strings.Contains(lines[1], "suppressed=999") {
		t.Errorf("second line %q does not count the suppressed records", lines[1])
	}
}
