package xen

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// DefaultLockDir is where OpenDomain records which exporter watches which
// domain, when Config.LockDir is empty.
const DefaultLockDir = "/run/vmi-exporter"

// ErrBusy is returned (wrapped) when another live exporter process holds
// the domain's claim.
var ErrBusy = errors.New("xen domain watched by another exporter")

// claim is this process's record that it watches a domain: an exclusive
// flock on <dir>/xen-<domid>.lock holding our pid. The kernel drops the
// flock when the process dies however it dies, so a later exporter can tell
// a live owner (lock held: ErrBusy) from a dead one (lock free but the pid
// record still there, because only a clean Close empties it). A dead owner
// is what makes an enabled vm_event ring an orphan this driver may tear
// down, rather than the ring of some other introspection tool.
type claim struct {
	f *os.File
	// stale is the pid a previous owner left behind (0: none, a clean
	// exit or a first claim).
	stale int
}

// maxClaimRecord bounds how much of a (hostile or corrupt) lock file is read.
const maxClaimRecord = 64

// takeClaim claims domid under dir, creating dir if needed.
func takeClaim(dir string, domid uint32) (*claim, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("xen: claim directory: %w", err)
	}
	path := filepath.Join(dir, fmt.Sprintf("xen-%d.lock", domid))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("xen: claim domain %d: %w", domid, err)
	}
	rec, rerr := io.ReadAll(io.LimitReader(f, maxClaimRecord))
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("xen: domain %d: %w (pid %s, %s)", domid, ErrBusy, parsePid(rec), path)
		}
		return nil, fmt.Errorf("xen: lock %s: %w", path, err)
	}
	c := &claim{f: f}
	if rerr == nil {
		// Read again under the lock: the first read raced a previous
		// owner's clean release.
		if rec, rerr = readClaim(f); rerr == nil {
			c.stale, _ = strconv.Atoi(parsePid(rec))
		}
	}
	if err := writeClaim(f, strconv.Itoa(os.Getpid())); err != nil {
		f.Close()
		return nil, fmt.Errorf("xen: write %s: %w", path, err)
	}
	return c, nil
}

func readClaim(f *os.File) ([]byte, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return io.ReadAll(io.LimitReader(f, maxClaimRecord))
}

func writeClaim(f *os.File, s string) error {
	if err := f.Truncate(0); err != nil {
		return err
	}
	_, err := f.WriteAt([]byte(s), 0)
	return err
}

// parsePid returns the pid a record holds, or "unknown".
func parsePid(rec []byte) string {
	s := strings.TrimSpace(string(rec))
	if n, err := strconv.Atoi(s); err == nil && n > 0 {
		return strconv.Itoa(n)
	}
	return "unknown"
}

// release marks a clean exit (empty record) and drops the lock.
func (c *claim) release() error {
	if c == nil || c.f == nil {
		return nil
	}
	err := writeClaim(c.f, "")
	err = errors.Join(err, c.f.Close())
	c.f = nil
	return err
}
