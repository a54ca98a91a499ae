package klist

import (
	"errors"
	"slices"
	"testing"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/paging"
)

func TestWalk(t *testing.T) {
	bad := errors.New("unreadable")
	cases := []struct {
		name  string
		links map[introspect.Va]introspect.Va
		max   int
		want  []introspect.Va
		err   error
	}{
		{"empty", map[introspect.Va]introspect.Va{1: 1}, 10, nil, nil},
		{"ring", map[introspect.Va]introspect.Va{1: 2, 2: 3, 3: 1}, 10, []introspect.Va{2, 3}, nil},
		{"bound", map[introspect.Va]introspect.Va{1: 2, 2: 3, 3: 1}, 1, []introspect.Va{2}, paging.ErrTooLong},
		{"loop", map[introspect.Va]introspect.Va{1: 2, 2: 3, 3: 2}, 10, []introspect.Va{2, 3}, ErrLoop},
		{"broken", map[introspect.Va]introspect.Va{1: 2}, 10, []introspect.Va{2}, bad},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var got []introspect.Va
			err := Walk(1, c.max, func(l introspect.Va) (introspect.Va, error) {
				n, ok := c.links[l]
				if !ok {
					return 0, bad
				}
				return n, nil
			}, func(l introspect.Va) error {
				got = append(got, l)
				return nil
			})
			if !errors.Is(err, c.err) || (c.err == nil && err != nil) || !slices.Equal(got, c.want) {
				t.Errorf("visited %v, err %v; want %v, %v", got, err, c.want, c.err)
			}
		})
	}
	stop := errors.New("stop")
	if err := Walk(1, 10, func(l introspect.Va) (introspect.Va, error) { return l + 1, nil },
		func(introspect.Va) error { return stop }); !errors.Is(err, stop) {
		t.Errorf("visit error: %v", err)
	}
}
