package testguest

import (
	"bytes"
	"context"
	"debug/elf"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestWritevProgram builds the guest's vectored writer from its embedded
// source as Prepare does (and again, from the cache), runs it on this
// linux/amd64 host, and checks its file, its manifest line, and, under
// strace when installed, that each write is one writev(2) of the file and
// that it ends with exit_group(2).
func TestWritevProgram(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Fatalf("the Go toolchain is needed to build the guest: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cache := t.TempDir()
	log := slog.New(slog.DiscardHandler)
	bin, err := buildWritev(ctx, cache, log)
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		t.Fatalf("not an ELF file: %v", err)
	}
	if f.Machine != elf.EM_X86_64 || f.Type != elf.ET_EXEC {
		t.Errorf("ELF machine %v type %v, want a static x86-64 executable", f.Machine, f.Type)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("ELF has %v: not static", p.Type)
		}
	}
	again, err := buildWritev(ctx, cache, log)
	if err != nil || !bytes.Equal(again, bin) {
		t.Errorf("cached build differs (%v)", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(cache, "guestbin")); len(ents) != 1 || ents[0].Name() != writevKey() {
		t.Errorf("cache guestbin/ holds %v, want one build keyed %s", ents, writevKey())
	}

	dir := t.TempDir()
	exe := filepath.Join(dir, "vmi-writev")
	if err := os.WriteFile(exe, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "r7-v.dat")
	args := []string{exe, "7", out}
	trace := filepath.Join(dir, "trace")
	strace, serr := exec.LookPath("strace")
	if serr == nil {
		args = append([]string{strace, "-f", "-qq", "-o", trace, "-e", "trace=openat,write,writev,exit_group"}, args...)
	} else {
		t.Logf("strace not installed (%v): the system calls are not checked here, only by the live tests", serr)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v: %v: %s", args, err, stderr.String())
	}
	data, err := os.ReadFile(out)
	if err != nil || string(data) != "round 7 writev first\nround 7 writev second\n" {
		t.Errorf("file %q, %v", data, err)
	}
	lines := strings.Split(strings.TrimSuffix(stdout.String(), "\n"), "\n")
	if len(lines) != 1+CopiesPerRound+RenamesPerRound {
		t.Fatalf("stdout %q: not %d manifest lines", stdout.String(), 1+CopiesPerRound+RenamesPerRound)
	}
	rec, ok, err := ParseLine(lines[0])
	if !ok || err != nil {
		t.Fatalf("stdout %q: first line not a manifest line (%v)", stdout.String(), err)
	}
	var m Manifest
	var families []string
	for _, l := range lines[1:] {
		r, ok, err := ParseLine(l)
		if !ok || err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		m.Add(r)
		if r.Kind == KindCopy {
			c := r.Path
			families = append(families, r.Syscall)
			if r.Bytes != len(data) {
				t.Errorf("copy line %+v", r)
			}
			if b, err := os.ReadFile(c); c != out+".c" && (err != nil || len(b) != len(data)) {
				t.Errorf("copy %s: %d bytes, %v", c, len(b), err)
			}
		}
	}
	if !slices.Equal(families, CopyFamilies) {
		t.Errorf("copies by %v, want %v", families, CopyFamilies)
	}
	if len(m.Renames) != 1 || m.Renames[0].Old != out+".c" || m.Renames[0].New != out+".moved" {
		t.Errorf("renames %+v", m.Renames)
	}
	if b, err := os.ReadFile(out + ".moved"); err != nil || string(b) != string(data) {
		t.Errorf("renamed copy %q, %v", b, err)
	}
	want := Record{Kind: KindFile, Path: out, PID: rec.PID, Opens: OpensPerFile, Writes: WritesPerFile, Bytes: len(data), Round: 7}
	if rec != want || rec.PID == 0 {
		t.Errorf("manifest line %+v, want %+v", rec, want)
	}
	if serr != nil {
		return
	}
	tr, err := os.ReadFile(trace)
	if err != nil {
		t.Fatal(err)
	}
	var writevs, writes, opens int
	exited := false
	for _, l := range strings.Split(string(tr), "\n") {
		switch {
		case strings.Contains(l, "writev(") && strings.Contains(l, "iov_base=\"round 7 writev"):
			writevs++
		case strings.Contains(l, "write(") && !strings.Contains(l, "write(1, \"VMI ") && !strings.Contains(l, "ppppp"):
			writes++
		case strings.Contains(l, "openat(") && strings.Contains(l, out+"\"") && strings.Contains(l, "O_CREAT"):
			opens++
		case strings.Contains(l, "exit_group(0)"), strings.Contains(l, "exit_group(0 <unfinished ...>"):
			// strace splits the call when another thread acts meanwhile.
			exited = true
		}
	}
	if writevs != WritesPerFile || writes != 0 || opens != OpensPerFile || !exited {
		t.Errorf("strace: %d writev of the file, %d other writes, %d opens with O_CREAT, exit_group(0) %v; want %d, 0, %d, true:\n%s",
			writevs, writes, opens, exited, WritesPerFile, OpensPerFile, tr)
	}
}
