package integration_test

import (
	"encoding/json"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestModelRestartedNode: a node whose first App failed to start (the fault
// injector terminated its connections during Start) after that App had
// received messages starts a fresh App, which is owed only what is committed
// after its own Start. The model must not count the messages committed
// between the two Apps as lost, nor a message both Apps received as
// delivered twice.
func TestModelRestartedNode(t *testing.T) {
	t.Parallel()
	c := &cluster{t: t, nodes: map[string]*nodeProc{}, m: newModel()}
	for _, id := range []string{"n2", "n3", "n4"} {
		c.nodes[id] = &nodeProc{id: id, late: id == "n4"}
		c.order = append(c.order, id)
	}
	feed := func(id, line string) {
		var ev event
		require.NoError(t, json.Unmarshal([]byte(line), &ev))
		c.record(id, ev)
	}
	for seq := 1; seq <= 20; seq++ {
		for _, ev := range []string{"sync_sent", "ps_sent"} {
			feed("n3", `{"ev":"`+ev+`","seq":`+itoa(seq)+`}`)
		}
		feed("n2", `{"ev":"sync_recv","from":"n3","seq":`+itoa(seq)+`,"inc":1}`)
		feed("n2", `{"ev":"ps_recv","from":"n3","seq":`+itoa(seq)+`,"inc":1}`)
	}
	// n4's first App receives 3..8, fails to start; its second App starts
	// after 12 was committed and receives 12..20 (12 twice: committed as the
	// second App started, read by both).
	recv := func(inc string, from, to int) {
		for seq := from; seq <= to; seq++ {
			feed("n4", `{"ev":"sync_recv","from":"n3","seq":`+itoa(seq)+`,"inc":`+inc+`}`)
			feed("n4", `{"ev":"ps_recv","from":"n3","seq":`+itoa(seq)+`,"inc":`+inc+`}`)
		}
	}
	recv("1", 3, 8)
	feed("n4", `{"ev":"restart","n":1,"err":"app: start event queue: terminated"}`)
	recv("2", 12, 20)
	recv("1", 12, 12) // the first App's last handler call, reported late

	c.mu.Lock()
	defer c.mu.Unlock()
	require.Empty(t, c.undelivered())
	for _, st := range []*stream{&c.m.sync, &c.m.ps} {
		for to, bySender := range st.recv {
			for seq, n := range bySender["n3"] {
				require.Equalf(t, 1, n, "%s got n3's #%d %d times", to, seq, n)
			}
		}
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// TestModelLivenessLostRerun: a node whose queue liveness session stays lost
// for longer than queue.CancelAfterLoss (a connection cut whose reconnect is
// slow) cancels its running Process with queue.ErrLivenessLost, and the
// message runs again, uncharged, on any node: the documented contract
// (queue package doc, "Connection cut"). The model must allow that rerun,
// and still refuse a second run on live nodes that nothing explains.
func TestModelLivenessLostRerun(t *testing.T) {
	t.Parallel()
	c := &cluster{t: t, nodes: map[string]*nodeProc{}, m: newModel()}
	for _, id := range []string{"n2", "n3"} {
		c.nodes[id] = &nodeProc{id: id}
	}
	feed := func(id, line string) {
		var ev event
		require.NoError(t, json.Unmarshal([]byte(line), &ev))
		c.record(id, ev)
	}
	feed("n2", `{"ev":"q_pub","key":"n2:1","id":1}`)
	feed("n3", `{"ev":"q_run","key":"n2:1","inc":1}`)
	feed("n3", `{"ev":"q_lost","key":"n2:1","inc":1}`)
	feed("n2", `{"ev":"q_run","key":"n2:1","inc":1}`)
	feed("n2", `{"ev":"q_pub","key":"n2:2","id":2}`)
	feed("n3", `{"ev":"q_run","key":"n2:2","inc":1}`)

	c.mu.Lock()
	reruns, violations := c.queueReruns()
	c.mu.Unlock()
	require.Empty(t, violations)
	require.Equal(t, 1, reruns)

	// The same second run without the loss is a violation.
	feed("n2", `{"ev":"q_run","key":"n2:2","inc":1}`)
	c.mu.Lock()
	_, violations = c.queueReruns()
	c.mu.Unlock()
	require.Equal(t, []string{"queue: n2:2 ran 2 times ([n3 n2]) on live nodes, none cancelled by a lost liveness session"}, violations)
}
