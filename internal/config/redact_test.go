package config

import (
	"strings"
	"testing"
)

// Credentials in an endpoint never reach a log line or an error.
func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://alice:s3cret@otel.example:4318/v1/traces":  "https://REDACTED@otel.example:4318/v1/traces",
		"https://otel.example/v1/traces?api_key=s3cret&x=1": "https://otel.example/v1/traces?api_key=REDACTED&x=1",
		"otel.example:4317":         "otel.example:4317",
		"http://a:s3cret@[::1:bad/": "http://REDACTED",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
	c := &Config{OTLP: OTLP{Endpoint: "ftp://alice:s3cret@otel.example", Protocol: "http"}}
	if err := c.Validate(); err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("validation error shows the password: %v", err)
	}
}
