package profile

import (
	"bytes"
	"errors"
	"runtime"
	"testing"

	"github.com/ulikunitz/xz"

	"github.com/vmi-exporter/vmi-exporter/internal/xzcap"
)

// An .xz ISF whose block asks for a 1.5 GiB dictionary is refused before
// the decoder allocates it; a well-formed one still loads.
func TestISFDecompressionBombRefused(t *testing.T) {
	var b bytes.Buffer
	w, _ := xz.NewWriter(&b)
	w.Write([]byte(`{"metadata":{}}`))
	w.Close()
	forged, err := xzcap.ForgeDict(b.Bytes(), 37)
	if err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err = ParseISF(forged)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrISF) {
		t.Errorf("forged ISF: %v", err)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 256<<20 {
		t.Errorf("%d MiB allocated for %d bytes", n>>20, len(forged))
	}
	if _, err := ParseISF(b.Bytes()); err != nil && errors.Is(err, xzcap.ErrFormat) {
		t.Errorf("well-formed xz refused: %v", err)
	}
}
