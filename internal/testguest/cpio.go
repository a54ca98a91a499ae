package testguest

import (
	"errors"
	"fmt"
	"io"
	"strings"
)

// File mode type bits used in newc headers (the values of S_IF* on Linux).
const (
	modeDir     = 0o040000
	modeRegular = 0o100000
	modeSymlink = 0o120000
	modeCharDev = 0o020000
)

// cpioTrailer is the name of the entry that ends a newc archive.
const cpioTrailer = "TRAILER!!!"

// CPIOWriter writes a cpio archive in the "newc" format (magic 070701), the
// format the Linux kernel unpacks as an initramfs. Entries carry fixed
// ownership (root) and modification time so the archive is reproducible.
type CPIOWriter struct {
	w      io.Writer
	off    int64
	ino    uint32
	closed bool
}

// NewCPIOWriter returns a writer that appends entries to w.
func NewCPIOWriter(w io.Writer) *CPIOWriter {
	return &CPIOWriter{w: w, ino: 1}
}

// Dir adds a directory.
func (c *CPIOWriter) Dir(name string, perm uint32) error {
	return c.entry(name, modeDir|perm&0o7777, 2, 0, 0, nil)
}

// File adds a regular file with the given contents.
func (c *CPIOWriter) File(name string, perm uint32, data []byte) error {
	return c.entry(name, modeRegular|perm&0o7777, 1, 0, 0, data)
}

// Symlink adds a symbolic link name pointing at target.
func (c *CPIOWriter) Symlink(name, target string) error {
	return c.entry(name, modeSymlink|0o777, 1, 0, 0, []byte(target))
}

// CharDev adds a character device node.
func (c *CPIOWriter) CharDev(name string, perm, major, minor uint32) error {
	return c.entry(name, modeCharDev|perm&0o7777, 1, major, minor, nil)
}

// Close writes the trailer entry. It does not close the underlying writer.
func (c *CPIOWriter) Close() error {
	if c.closed {
		return nil
	}
	if err := c.write(cpioTrailer, 0, 0, 1, 0, 0, nil); err != nil {
		return err
	}
	c.closed = true
	return nil
}

func (c *CPIOWriter) entry(name string, mode, nlink, rmajor, rminor uint32, data []byte) error {
	if c.closed {
		return errors.New("cpio: write after close")
	}
	name = strings.TrimPrefix(name, "/")
	if name == "" || name == cpioTrailer || strings.ContainsRune(name, 0) {
		return fmt.Errorf("cpio: invalid entry name %q", name)
	}
	if int64(len(data)) > 0xffffffff {
		return fmt.Errorf("cpio: %s: file too large for newc (%d bytes)", name, len(data))
	}
	ino := c.ino
	c.ino++
	return c.write(name, ino, mode, nlink, rmajor, rminor, data)
}

func (c *CPIOWriter) write(name string, ino, mode, nlink, rmajor, rminor uint32, data []byte) error {
	// When the trailer is written mode is 0 and nlink 1, as GNU cpio does.
	hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rmajor, rminor, len(name)+1, 0)
	buf := make([]byte, 0, len(hdr)+len(name)+4+len(data)+3)
	buf = append(buf, hdr...)
	buf = append(buf, name...)
	buf = append(buf, 0)
	buf = pad4(buf, c.off)
	buf = append(buf, data...)
	buf = pad4(buf, c.off)
	n, err := c.w.Write(buf)
	c.off += int64(n)
	if err != nil {
		return fmt.Errorf("cpio: write %s: %w", name, err)
	}
	return nil
}

// pad4 appends NUL bytes until base+len(buf) is a multiple of 4.
func pad4(buf []byte, base int64) []byte {
	for (base+int64(len(buf)))%4 != 0 {
		buf = append(buf, 0)
	}
	return buf
}
