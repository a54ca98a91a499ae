package testguest

import (
	"context"
	"errors"
	"fmt"
)

// FloodFile is the file the guest's write-flood writes (and removes
// afterwards).
const FloodFile = "/tmp/vmi/flood.dat"

// Flood makes the guest's /bin/vmi-writev create FloodFile and make writes
// write(2) calls of 2 bytes on it as fast as it can (the "flood N"
// command), and returns the file record it reported (Opens 1, Writes
// writes, Round 0; PID is the writer). The flood is no workload round:
// round numbers and Run's manifests are unaffected. The guest must be idle.
func (g *Guest) Flood(ctx context.Context, writes int) (Record, error) {
	if writes <= 0 {
		return Record{}, fmt.Errorf("testguest: flood of %d writes", writes)
	}
	if err := g.WaitReady(ctx); err != nil {
		return Record{}, err
	}
	g.writeMu.Lock()
	defer g.writeMu.Unlock()
	if g.isLooping() {
		return Record{}, errors.New("testguest: flood: guest is looping; StopLoop first")
	}
	if err := g.waitIdle(ctx); err != nil {
		return Record{}, err
	}
	s := g.subscribe()
	defer g.unsubscribe(s)
	if err := g.command(fmt.Sprintf("flood %d", writes), false); err != nil {
		return Record{}, err
	}
	var file Record
	for {
		select {
		case <-ctx.Done():
			return file, fmt.Errorf("testguest: flood %d: %w", writes, ctx.Err())
		case <-g.exited:
			return file, fmt.Errorf("testguest: flood %d: %w", writes, g.exitError())
		case r := <-s.ch:
			switch r.Kind {
			case KindError:
				return file, fmt.Errorf("testguest: flood %d: guest error %s", writes, r.Msg)
			case KindFile:
				file = r
			case KindIdle:
				if file.Path != FloodFile || file.Writes != writes {
					return file, fmt.Errorf("testguest: flood %d: guest reported %+v", writes, file)
				}
				return file, nil
			}
		}
	}
}
