package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// cmdProbe is a container's health check: the image has no shell, curl or
// wget, so the binary asks its own /readyz or /healthz and exits non-zero
// unless it answers 200.
func cmdProbe(ctx context.Context, args []string, e *env) error {
	var timeout time.Duration
	fs := newFlagSet("probe", "GETs the URL (http://localhost:8080/readyz) and exits 0 on 200, 1 otherwise: a\n"+
		"health check for an image with no shell.", e)
	fs.durationVar(&timeout, "timeout", "", 5*time.Second, "bound on the request")
	pos, err := fs.parseInterleaved(args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("probe: want one URL, got %q", pos)
	}
	u, err := url.Parse(pos[0])
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("probe: %q is not an http(s) URL", pos[0])
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("probe: %s answered %s", u.Redacted(), resp.Status)
	}
	return nil
}
