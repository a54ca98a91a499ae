package profile

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/vmi-exporter/vmi-exporter/introspect/profile/pdb"
)

// kernelPDB is the x64 fixture of package pdb:
// GUID {EC826749-924C-3CE7-4C4C-44205044422E}, age 1.
var kernelPDB = CodeView{PDB: "ntkrnlmp.pdb", Age: 1, GUID: [16]byte{0x49, 0x67, 0x82, 0xec, 0x4c, 0x92, 0xe7, 0x3c, 0x4c, 0x4c, 0x44, 0x20, 0x50, 0x44, 0x42, 0x2e}}

// A symbol server hands out a PDB; the store converts it, saves the
// profile beside it and loads it; later lookups need no server.
func TestSymbolStoreDownloadConvertLoad(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("pdb", "testdata", "kernel.pdb"))
	if err != nil {
		t.Fatal(err)
	}
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.URL.Path != "/ntkrnlmp.pdb/EC826749924C3CE74C4C44205044422E1/ntkrnlmp.pdb" {
			http.NotFound(w, r)
			return
		}
		w.Write(data)
	}))
	defer srv.Close()
	dir := t.TempDir()
	s := &SymbolStore{Dir: dir, Server: srv.URL}
	isf, err := s.ForCodeView(context.Background(), kernelPDB)
	if err != nil {
		t.Fatal(err)
	}
	if w := isf.Metadata.Windows; w == nil || w.Key() != "EC826749924C3CE74C4C44205044422E1" || w.Database != "ntkrnlmp.pdb" {
		t.Fatalf("metadata %+v", isf.Metadata.Windows)
	}
	if off, err := isf.Profile.Offset("_EPROCESS", "ActiveProcessLinks"); err != nil || off != 80 {
		t.Errorf("_EPROCESS.ActiveProcessLinks at %d: %v", off, err)
	}
	if rva, err := isf.Profile.Symbol("PsActiveProcessHead"); err != nil || rva != 0x3010 {
		t.Errorf("PsActiveProcessHead at %#x: %v", rva, err)
	}
	saved := filepath.Join(dir, "ntkrnlmp.pdb", "EC826749924C3CE74C4C44205044422E1.json")
	if p, err := s.Path(kernelPDB.Info()); err != nil || p != saved {
		t.Errorf("saved profile at %q (%v), want %q", p, err, saved)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "ntkrnlmp.pdb", ".convert-*")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}

	// Offline now: the saved profile serves.
	srv.Close()
	n := hits.Load()
	s = &SymbolStore{Dir: dir, Server: srv.URL}
	if _, err := s.ForCodeView(context.Background(), kernelPDB); err != nil || hits.Load() != n {
		t.Fatalf("second lookup: %v (%d downloads)", err, hits.Load()-n)
	}

	// A PDB already in the store is converted without any server.
	dir2 := t.TempDir()
	pdbDir := filepath.Join(dir2, "ntkrnlmp.pdb", "EC826749924C3CE74C4C44205044422E1")
	if err := os.MkdirAll(pdbDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pdbDir, "ntkrnlmp.pdb"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if isf, err := (&SymbolStore{Dir: dir2}).ForCodeView(context.Background(), kernelPDB); err != nil || isf.Profile.Types["_EPROCESS"] == nil {
		t.Fatalf("PDB in store: %v", err)
	}
}

// A server answering with another PDB than the one asked for: nothing is
// saved under the wrong key.
func TestSymbolStoreWrongPDB(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("pdb", "testdata", "kernel32.pdb"))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(data) }))
	defer srv.Close()
	dir := t.TempDir()
	s := &SymbolStore{Dir: dir, Server: srv.URL}
	_, err = s.ForCodeView(context.Background(), kernelPDB)
	if !errors.Is(err, ErrPDBNotConverted) || !errors.Is(err, ErrNoProfile) || !errors.Is(err, pdb.ErrFormat) {
		t.Fatalf("err %v", err)
	}
	if _, err := s.Path(kernelPDB.Info()); !errors.Is(err, ErrNoProfile) {
		t.Errorf("a profile was saved: %v", err)
	}
}
