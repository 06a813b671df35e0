package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// apiClient talks to a running sluice API for the operator commands (jobs, dlq). The token
// comes from SLUICE_TOKEN and is never printed.
type apiClient struct {
	base  string
	token string
	http  *http.Client
}

func bindAPI(fs *flag.FlagSet) *apiClient {
	c := &apiClient{token: envOr("SLUICE_TOKEN", ""), http: &http.Client{Timeout: 0}}
	fs.StringVar(&c.base, "api-url", envOr("SLUICE_API_URL", "http://127.0.0.1:8080"), "URL of the sluice API (SLUICE_API_URL); the token comes from SLUICE_TOKEN")
	return c
}

// apiError is a problem+json answer.
type apiError struct {
	Status int    `json:"status"`
	Title  string `json:"title"`
	Detail string `json:"detail"`
}

func (e *apiError) Error() string {
	if e.Detail != "" {
		return fmt.Sprintf("%d %s: %s", e.Status, e.Title, e.Detail)
	}
	return fmt.Sprintf("%d %s", e.Status, e.Title)
}

// do sends a request and decodes a JSON answer into out (when not nil).
func (c *apiClient) do(ctx context.Context, method, path string, query url.Values, body any, out any) error {
	u := strings.TrimRight(c.base, "/") + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	c.auth(req)
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return decodeProblem(resp)
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
	}
	return nil
}

func (c *apiClient) auth(req *http.Request) {
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
}

func decodeProblem(resp *http.Response) error {
	e := &apiError{Status: resp.StatusCode, Title: http.StatusText(resp.StatusCode)}
	_ = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(e)
	if resp.StatusCode == http.StatusUnauthorized && e.Detail == "" {
		e.Detail = "set SLUICE_TOKEN to a token the server accepts"
	}
	return e
}

// events reads a server-sent event stream, calling fn with each event's name and data until
// the stream ends, fn returns true, or ctx ends.
func (c *apiClient) events(ctx context.Context, path string, fn func(event string, data []byte) bool) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(c.base, "/")+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	c.auth(req)
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return decodeProblem(resp)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	var event string
	var data []byte
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if event != "" || data != nil {
				if fn(event, data) {
					return nil
				}
			}
			event, data = "", nil
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data = append(data, strings.TrimPrefix(line, "data: ")...)
		}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return fmt.Errorf("read events: %w", err)
	}
	return ctx.Err()
}
