package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestDemoSendsThroughTheMockAndSummarises(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run([]string{"demo", "-n", "3000", "-reject-every", "500", "-progress", "0"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit status %d; stderr:\n%s", code, stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{
		"delivered  2994 (the mock gateway counted 2994)",
		"status 8 (invalid token): 6",
		"feedback   3 bad tokens",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestUsageErrorsExitWithStatus2(t *testing.T) {
	for _, args := range [][]string{nil, {"frobnicate"}, {"demo", "-n", "-1"}, {"demo", "-nope"}} {
		var stdout, stderr bytes.Buffer
		if code := run(args, &stdout, &stderr); code != 2 {
			t.Errorf("run(%q) = %d; want 2", args, code)
		}
		if stderr.Len() == 0 {
			t.Errorf("run(%q) printed nothing on stderr", args)
		}
	}
}

func TestDemoOverHTTP2ReportsThe410TokensAsFeedback(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run([]string{"demo", "-protocol", "http2", "-n", "1000", "-reject-every", "250", "-progress", "0"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit status %d; stderr:\n%s", code, stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{"delivered  996 (the mock gateway counted 996)", "status 8 (invalid token): 4", "feedback   4 bad tokens"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
