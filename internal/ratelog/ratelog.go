// Package ratelog logs at a limited rate: for messages a guest or a
// failing backend can trigger at any rate, where one line per occurrence
// would flood the log and cost the event loop.
package ratelog

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// DefaultInterval is the shortest time between two lines of a Logger.
const DefaultInterval = 10 * time.Second

// Logger lets one record through per interval and counts the others; the
// next record it lets through carries their number as "suppressed".
type Logger struct {
	log      *slog.Logger
	interval time.Duration
	now      func() time.Time

	mu         sync.Mutex
	next       time.Time
	suppressed int
}

// New returns a Logger writing to log (nil: discard) at most once per
// interval (DefaultInterval if <= 0).
func New(log *slog.Logger, interval time.Duration) *Logger {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if interval <= 0 {
		interval = DefaultInterval
	}
	return &Logger{log: log, interval: interval, now: time.Now}
}

// allow reports whether a record may be written now, and how many were
// suppressed since the last one.
func (l *Logger) allow() (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if now.Before(l.next) {
		l.suppressed++
		return false, 0
	}
	n := l.suppressed
	l.suppressed, l.next = 0, now.Add(l.interval)
	return true, n
}

// Log writes a record at level unless one was written less than the
// interval ago.
func (l *Logger) Log(level slog.Level, msg string, args ...any) {
	if !l.log.Enabled(context.Background(), level) {
		return
	}
	ok, n := l.allow()
	if !ok {
		return
	}
	if n > 0 {
		args = append(args, "suppressed", n)
	}
	l.log.Log(context.Background(), level, msg, args...)
}

// Warn logs at warn level, rate-limited.
func (l *Logger) Warn(msg string, args ...any) { l.Log(slog.LevelWarn, msg, args...) }

// Error logs at error level, rate-limited.
func (l *Logger) Error(msg string, args ...any) { l.Log(slog.LevelError, msg, args...) }
