package testguest

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
)

// rootfs holds /init and the workload scripts, copied verbatim into the
// initramfs.
//
//go:embed rootfs
var rootfs embed.FS

// applets are the busybox applets /init and the workload scripts call. The
// scripts run under busybox's ash, which runs applets without these links too,
// but the links make the image usable by hand (and name what is needed).
var applets = []string{"sh", "mount", "mkdir", "stty", "poweroff", "rm", "cat", "ls", "ps", "echo"}

// ScriptsDigest returns a hex digest of the embedded guest scripts, the
// guest's vmi-writev build (its source, flags and Go version) and the image
// layout version. It keys the initramfs cache, so changing a script or the
// program rebuilds the image.
func ScriptsDigest() (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "layout 2\nvmi-writev %s\n", writevKey())
	for _, a := range applets {
		fmt.Fprintf(h, "applet %s\n", a)
	}
	files, err := scriptFiles()
	if err != nil {
		return "", err
	}
	for _, f := range files {
		fmt.Fprintf(h, "file %s %d\n", f.name, len(f.data))
		h.Write(f.data)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

type scriptFile struct {
	name string // path inside the guest, without leading slash
	data []byte
}

func scriptFiles() ([]scriptFile, error) {
	var out []scriptFile
	err := fs.WalkDir(rootfs, "rootfs", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := rootfs.ReadFile(p)
		if err != nil {
			return err
		}
		out = append(out, scriptFile{name: p[len("rootfs/"):], data: data})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read embedded guest scripts: %w", err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out, nil
}

// BuildInitramfs writes a gzip-compressed newc initramfs containing busybox
// (the static binary's contents), its applet links, /init, the workload
// scripts, and the vectored writer writev (the static vmi-writev binary)
// with its exit link to busybox. The output depends only on its inputs.
func BuildInitramfs(w io.Writer, busybox, writev []byte) error {
	zw, err := gzip.NewWriterLevel(w, gzip.BestCompression)
	if err != nil {
		return err
	}
	if err := writeRootfs(zw, busybox, writev); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("initramfs: gzip: %w", err)
	}
	return nil
}

func writeRootfs(w io.Writer, busybox, writev []byte) error {
	files, err := scriptFiles()
	if err != nil {
		return err
	}
	cw := NewCPIOWriter(w)
	for _, d := range []string{"bin", "dev", "proc", "sys", "tmp", "sbin", "etc"} {
		if err := cw.Dir(d, 0o755); err != nil {
			return err
		}
	}
	// The kernel opens /dev/console for init before /init mounts devtmpfs.
	if err := cw.CharDev("dev/console", 0o600, 5, 1); err != nil {
		return err
	}
	if err := cw.CharDev("dev/null", 0o666, 1, 3); err != nil {
		return err
	}
	if err := cw.File("bin/busybox", 0o755, busybox); err != nil {
		return err
	}
	for _, a := range applets {
		if err := cw.Symlink(path.Join("bin", a), "busybox"); err != nil {
			return err
		}
	}
	for _, f := range files {
		if err := cw.File(f.name, 0o755, f.data); err != nil {
			return err
		}
	}
	if err := cw.File(writevBin, 0o755, writev); err != nil {
		return err
	}
	return cw.Close()
}

// initramfsBytes is BuildInitramfs into memory.
func initramfsBytes(busybox, writev []byte) ([]byte, error) {
	var b bytes.Buffer
	if err := BuildInitramfs(&b, busybox, writev); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
