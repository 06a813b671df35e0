// Command dataapi-double runs the strict AstraDB Data API double (sinks/astra/dataapitest) as a
// process of its own, for tests written in other languages: the Python acceptance suite
// (sources/python/acceptance) points `sluice serve` at it with ASTRA_DB_API_ENDPOINT.
//
// It prints one JSON line on stdout, {"url": "http://127.0.0.1:PORT", "token": "..."}, then
// serves until its standard input closes or it receives SIGTERM/SIGINT. On exit it prints the
// protocol violations the double recorded (requests a correct client never sends), one a line
// on stderr, and exits 1 if there were any, 0 otherwise. It is a test tool, not part of a
// deployment: the double keeps everything in memory.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/sluice-dev/sluice/sinks/astra/dataapitest"
)

func main() {
	os.Exit(run())
}

func run() int {
	double := dataapitest.New(dataapitest.Config{})
	line, err := json.Marshal(map[string]string{"url": double.URL(), "token": double.Token()})
	if err != nil {
		fmt.Fprintln(os.Stderr, "dataapi-double:", err)
		return 2
	}
	fmt.Println(string(line))

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	stdinClosed := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(stdinClosed)
	}()
	select {
	case <-stop:
	case <-stdinClosed:
	}
	signal.Stop(stop)

	violations := double.Stats().Violations
	double.Close()
	for _, v := range violations {
		fmt.Fprintln(os.Stderr, "dataapi-double: violation:", v)
	}
	if len(violations) > 0 {
		return 1
	}
	return 0
}
