package linux_test

import "testing"

// BenchmarkCurrentTask reads the current task's identity (pid, tgid, comm,
// parent) on synthetic memory, with the translation cache flushed each
// time as at every hit.
func BenchmarkCurrentTask(b *testing.B) {
	w := newWorld(b, slide)
	o := newOS(b, w)
	regs, _ := w.g.Registers(1)
	for b.Loop() {
		o.Flush()
		if _, err := o.CurrentTask(&regs); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkComm reads only comm, with cached translations.
func BenchmarkComm(b *testing.B) {
	w := newWorld(b, slide)
	o := newOS(b, w)
	for b.Loop() {
		if _, err := o.Comm(w.shell); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFDPath resolves fd 7 of the shell to /mnt/data/logs/x.log
// (fd table, file, four dentries, one mount crossing), uncached.
func BenchmarkFDPath(b *testing.B) {
	w := newWorld(b, slide)
	o := newOS(b, w)
	for b.Loop() {
		o.Flush()
		if _, err := o.FDPath(w.shell, 7); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFDPathCached is BenchmarkFDPath with warm translations.
func BenchmarkFDPathCached(b *testing.B) {
	w := newWorld(b, slide)
	o := newOS(b, w)
	for b.Loop() {
		if _, err := o.FDPath(w.shell, 7); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkKASLRScan finds the slide with no register hints: the full scan
// of the 1 GiB window.
func BenchmarkKASLRScan(b *testing.B) {
	w := newWorld(b, 0x3c000000)
	for i := range w.g.Regs {
		w.g.Regs[i].LSTAR, w.g.Regs[i].RIP = 0, 0
	}
	for b.Loop() {
		newOS(b, w)
	}
}
