package main

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// A profiled run leaves a gzip-compressed pprof profile behind, and no
// path profiles nothing.
func TestCPUProfile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cpu.pprof")
	cfg, err := parseRunConfig([]string{"--cpu-profile", path}, testEnv(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.CPUProfile != path {
		t.Fatalf("--cpu-profile parsed as %q", cfg.CPUProfile)
	}
	ran := false
	if err := withCPUProfile(cfg.CPUProfile, func() error { ran = true; return nil }); err != nil || !ran {
		t.Fatalf("withCPUProfile: ran %v, err %v", ran, err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("profile is not gzip: %v", err)
	}
	if body, err := io.ReadAll(zr); err != nil || len(body) == 0 {
		t.Fatalf("profile body: %d bytes, %v", len(body), err)
	}
	if err := withCPUProfile("", func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	if err := withCPUProfile(filepath.Join(t.TempDir(), "missing", "cpu.pprof"), func() error { t.Fatal("ran without its profile"); return nil }); err == nil {
		t.Fatal("an unwritable profile path was accepted")
	}
}
