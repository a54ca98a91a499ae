package redact

import (
	"fmt"
	"strings"
	"testing"
)

// Credentials in an endpoint never reach a log line or an error.
func TestURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://alice:s3cret@otel.example:4318/v1/traces":  "https://REDACTED@otel.example:4318/v1/traces",
		"https://otel.example/v1/traces?api_key=s3cret&x=1": "https://otel.example/v1/traces?api_key=REDACTED&x=1",
		"otel.example:4317":         "otel.example:4317",
		"http://a:s3cret@[::1:bad/": "http://REDACTED",
	} {
		if got := URL(in); got != want {
			t.Errorf("URL(%q) = %q, want %q", in, got, want)
		}
	}
	raw := "https://alice:s3cret@otel.example:4318/v1/traces"
	msg := Error(fmt.Errorf("failed to send to %s: 401 Unauthorized", raw), raw)
	if strings.Contains(msg, "s3cret") || !strings.Contains(msg, "401") {
		t.Errorf("Error: %s", msg)
	}
}
