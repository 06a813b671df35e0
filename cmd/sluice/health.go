package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluice-dev/sluice/sources/httpapi"
)

// newHealthCmd is "sluice health": a container health check that needs no shell or curl
// (the image is distroless). It asks /healthz of the ops listener on --ops-addr (every serve,
// worker and api process has one) and exits 0 on 200, 1 otherwise, saying why.
func newHealthCmd(c *cli) *cobra.Command {
	var opsAddr, apiAddr string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "health",
		Short: "Exit 0 when the sluice process on --ops-addr answers /healthz with 200 (container health checks)",
		Long: `Asks GET /healthz of the ops listener of the sluice serve, worker or api process on
--ops-addr (the same flag and variable the process reads, default ` + httpapi.DefaultOpsAddr + `; a
wildcard host such as 0.0.0.0 is asked on loopback) and exits 0 on 200, 1 on anything else or
no answer within --timeout. It needs no token. For Docker's HEALTHCHECK and Kubernetes exec
probes in the distroless image, which has no shell or curl. --http-addr asks the API's own
/healthz instead, for a serve or api process whose ops listener is off.`,
		Example: `  sluice health
  sluice health --ops-addr 127.0.0.1:9090 --timeout 2s
  sluice health --http-addr 127.0.0.1:8080       # the API's /healthz (ops listener off)`,
		Args: noArgs("health takes no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			addr := opsAddr
			if apiAddr != "" {
				addr = apiAddr
			} else if addr == "" || strings.EqualFold(addr, opsOff) {
				return usageError{"health: the ops listener is off (--ops-addr / SLUICE_OPS_ADDR " + opsOff + "); give --http-addr to ask the API's /healthz"}
			}
			return checkHealth(cmd.Context(), healthURL(addr), timeout, c)
		},
	}
	bindStrings(cmd.Flags(), []stringFlag{
		{&opsAddr, "ops-addr", "SLUICE_OPS_ADDR", httpapi.DefaultOpsAddr, "ops listener of the process to ask"},
	})
	// Not bound to SLUICE_HTTP_ADDR: an image sets it for the API, and the ops listener is
	// what the health check asks unless told otherwise.
	cmd.Flags().StringVar(&apiAddr, "http-addr", "", "ask the API's /healthz at this address instead of the ops listener")
	cmd.Flags().DurationVar(&timeout, "timeout", 3*time.Second, "how long to wait for the answer")
	return cmd
}

// healthURL returns the /healthz URL of a process listening on addr: a wildcard or empty host
// (0.0.0.0, ::) is asked on loopback, where the listener answers too.
func healthURL(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "http://" + addr + "/healthz"
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + "/healthz"
}

// checkHealth asks url once and returns nil on 200.
func checkHealth(ctx context.Context, url string, timeout time.Duration, c *cli) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("health: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("health: %s: %w", url, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("health: %s answered %s", url, resp.Status)
	}
	_, err = fmt.Fprintln(c.stdout, "ok")
	return err
}
