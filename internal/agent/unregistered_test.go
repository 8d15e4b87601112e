package agent

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/underlay/underlay/internal/register"
	"github.com/underlay/underlay/internal/unregistered"
)

// TestUnregisteredTasks: the registration agent's left-out containers
// become the report's tasks with the node their labels name, which
// unregistered.Build checks against the publishing node's.
func TestUnregisteredTasks(t *testing.T) {
	got := unregisteredTasks([]register.LeftOut{{ContainerID: "c1", TaskID: "t1", NodeID: "n1", Reason: register.LeftOutNoPort}})
	want := []unregistered.Task{{TaskID: "t1", ContainerID: "c1", Reason: register.LeftOutNoPort, NodeID: "n1"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("tasks (-want +got):\n%s", diff)
	}
}
