package main

import (
	"context"
	"errors"
	"log/slog"

	"github.com/vmi-exporter/vmi-exporter/collector"
)

// bootTestGuest is the seam for internal/testguest (issue 2): it builds
// and boots the reproducible test guest. Until that package is wired in,
// the demo says so instead of pretending.
var bootTestGuest bootTestGuestFunc = func(ctx context.Context, dir string, log *slog.Logger) (collector.GuestConfig, func() error, error) {
	return collector.GuestConfig{}, nil, errors.New("internal/testguest is not wired into the demo yet")
}
