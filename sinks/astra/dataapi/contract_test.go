package dataapi

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/pipeline/secret"
)

// contractClient returns a client of the real database named by ASTRA_DB_API_ENDPOINT,
// ASTRA_DB_APPLICATION_TOKEN and ASTRA_DB_KEYSPACE, or skips t when they are not set.
func contractClient(t *testing.T) *Client {
	t.Helper()
	endpoint, token := os.Getenv("ASTRA_DB_API_ENDPOINT"), os.Getenv("ASTRA_DB_APPLICATION_TOKEN")
	if endpoint == "" || token == "" {
		t.Skip("ASTRA_DB_API_ENDPOINT not set: contract tests against real Astra skipped")
	}
	c, err := NewClient(Config{
		Endpoint: endpoint, Token: secret.String(token), Keyspace: os.Getenv("ASTRA_DB_KEYSPACE"),
		RequestTimeout: 60 * time.Second, // createCollection takes seconds on Astra
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// uniqueCollection returns a collection name no other run uses.
func uniqueCollection(t *testing.T, prefix string) string {
	t.Helper()
	b := make([]byte, 6)
	_, _ = rand.Read(b) // never fails
	return prefix + "_" + hex.EncodeToString(b)
}

func TestContractCommands(t *testing.T) {
	c := contractClient(t)
	runCommandTests(t, c, uniqueCollection(t, "sluice_ct_cmd"))
}
