package queue

import (
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// River's queue name rule as River writes it (validateQueueName in
// client.go, v0.51.2).
var riverRule = regexp.MustCompile(`^(?:[a-z0-9])+(?:[_|\-]?[a-z0-9]+)*$`)

func TestQueueNameIsValidStableAndCollisionFree(t *testing.T) {
	t.Parallel()
	channels := []string{
		"test1", "Test1", "test-1", "test_1", "test 1", "test.1", "a-b", "b", "a_b", "main-a",
		"async-task-manager.task", "é", "日本語", "", "___", strings.Repeat("x", 500), strings.Repeat("y", 59),
		`"quoted"`, "a\x00b", "a", "x_60b6a720d89a69e9", "60b6a720d89a69e9", "shared",
	}
	seen := map[string]string{}
	for _, app := range []string{"main", "sub-app", "sub_app", "main-a", "Main", "", "a"} {
		for _, shared := range []bool{false, true} {
			for _, ch := range channels {
				name := queueName(app, ch, shared)
				require.LessOrEqual(t, len(name), maxQueueNameLen, name)
				require.Regexp(t, riverRule, name)
				require.Equal(t, name, queueName(app, ch, shared), "stable")
				key := app + "|" + ch
				if shared {
					key = "shared|" + ch
				}
				if prev, ok := seen[name]; ok {
					require.Equal(t, prev, key, "collision on %s", name)
				}
				seen[name] = key
			}
		}
	}
	for _, tc := range []struct {
		app, channel string
		shared       bool
		want         string
	}{
		// Readable: what River UI and SQL show.
		{"main", "test1", false, "main-test1"},
		{"main", "send_email", false, "main-send_email"},
		{"main", "a-b", false, "main-a-b"},
		{"sub_app", "emails", false, "sub_app-emails"},
		{"", "emails", true, "emails"},
		{"main", "send_email", true, "send_email"},
		// Hashed (unchanged since before readable names): pinned, since
		// messages queued under a name must be found again.
		{"main", "async-task-manager.task", false, "main_async_task_manager_task_2d0792a1e9a5d8e9"},
		{"main", "Test1", false, "main_test1_" + hashedQueueName("main", "Test1", false)[11:]},
		{"sub-app", "test1", false, hashedQueueName("sub-app", "test1", false)},
		{"", "x-y", true, hashedQueueName("", "x-y", true)},
		{"", "x_60b6a720d89a69e9", true, hashedQueueName("", "x_60b6a720d89a69e9", true)},
	} {
		require.Equal(t, tc.want, queueName(tc.app, tc.channel, tc.shared), "%+v", tc)
	}
	require.Equal(t, "main_test1_96fc4ec1c46de9fa", hashedQueueName("main", "test1", false), "the name before readable names (migration 12)")
	require.Equal(t, "x_60b6a720d89a69e9", hashedQueueName("", "x", true))
}

func TestFetchSettingsDerivedFromConcurrency(t *testing.T) {
	t.Parallel()
	q := &EventQueue{cfg: (&Config{}).withDefaults()}
	qc := q.queueConfig(Consumer{Concurrency: 1})
	require.Equal(t, minFetchCooldown, qc.FetchCooldown)
	require.Equal(t, DefaultPollInterval, qc.FetchPollInterval)
	require.Equal(t, 1, qc.MaxWorkers)
	qc = q.queueConfig(Consumer{Concurrency: 100})
	require.Equal(t, 2*minFetchCooldown, qc.FetchCooldown)
	qc = q.queueConfig(Consumer{Concurrency: 0, PollInterval: 5 * minFetchCooldown})
	require.Equal(t, DefaultConcurrency, qc.MaxWorkers, "0 is NocoBase's default, not River's maximum")
	require.Equal(t, minFetchCooldown, qc.FetchCooldown)
	qc = q.queueConfig(Consumer{Concurrency: MaxConcurrency})
	require.Equal(t, MaxConcurrency, qc.MaxWorkers)
	qc = q.queueConfig(Consumer{Concurrency: 5000, PollInterval: 5 * minFetchCooldown})
	require.Equal(t, 5*minFetchCooldown, qc.FetchCooldown, "never above the poll interval")
	qc = q.queueConfig(Consumer{Concurrency: 5000})
	require.Equal(t, maxDerivedFetchCooldown, qc.FetchCooldown)
}
