package queue

import (
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// River's queue name rule (validateQueueName in client.go, v0.51.2).
var riverQueueName = regexp.MustCompile(`^(?:[a-z0-9])+(?:[_|\-]?[a-z0-9]+)*$`)

func TestQueueNameIsValidStableAndCollisionFree(t *testing.T) {
	t.Parallel()
	channels := []string{
		"test1", "Test1", "test-1", "test_1", "test 1", "test.1",
		"async-task-manager.task", "é", "日本語", "", "___", strings.Repeat("x", 500),
		`"quoted"`, "a\x00b", "a", "b",
	}
	seen := map[string]string{}
	for _, app := range []string{"main", "sub-app", ""} {
		for _, shared := range []bool{false, true} {
			for _, ch := range channels {
				name := queueName(app, ch, shared)
				require.LessOrEqual(t, len(name), maxQueueNameLen, name)
				require.Regexp(t, riverQueueName, name)
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
	require.Equal(t, "main_async_task_manager_task_", queueName("main", "async-task-manager.task", false)[:29])
	require.True(t, strings.HasPrefix(queueName("main", "async-task-manager.task", true), "async_task_manager_task_"))
	// Pinned: a queue name must not change across versions (messages queued
	// under it would be orphaned).
	require.Equal(t, "main_test1_96fc4ec1c46de9fa", queueName("main", "test1", false))
	require.Equal(t, "x_60b6a720d89a69e9", queueName("", "x", true))
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
