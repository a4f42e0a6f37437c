package integration_test

import (
	"os"
	"testing"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
)

// No Docker engine runs in CI, so docker-compose.yml is checked by parsing it.
func TestDockerComposeFile(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("../docker-compose.yml")
	require.NoError(t, err)
	var doc struct {
		Services map[string]struct {
			Image       string            `yaml:"image"`
			Environment map[string]string `yaml:"environment"`
			Volumes     []string          `yaml:"volumes"`
			Healthcheck struct {
				Test []string `yaml:"test"`
			} `yaml:"healthcheck"`
			DependsOn map[string]struct {
				Condition string `yaml:"condition"`
			} `yaml:"depends_on"`
			Command []string `yaml:"command"`
		} `yaml:"services"`
		Volumes map[string]any `yaml:"volumes"`
	}
	require.NoError(t, yaml.Unmarshal(raw, &doc))

	pg, ok := doc.Services["postgres"]
	require.True(t, ok, "a postgres service")
	require.Equal(t, "postgres:15", pg.Image)
	require.NotEmpty(t, pg.Healthcheck.Test, "postgres has a healthcheck")
	require.Contains(t, pg.Volumes, "pgdata:/var/lib/postgresql/data")
	require.Contains(t, doc.Volumes, "pgdata", "the data volume is named")

	demo, ok := doc.Services["demo"]
	require.True(t, ok, "a demo service")
	require.Contains(t, demo.Environment["PGCOORD_DATABASE_URL"], "@postgres:5432/")
	require.Equal(t, "service_healthy", demo.DependsOn["postgres"].Condition)
	require.Equal(t, []string{"go", "run", "./cmd/pgcoord", "demo"}, demo.Command)
}
