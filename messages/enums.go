package messages

// Shell is the interpreter an agent runs a script with. Lowercase on the
// wire.
type Shell string

const (
	ShellPowerShell Shell = "powershell"
	ShellCmd        Shell = "cmd"
)

// Valid reports whether s is a shell agents know.
func (s Shell) Valid() bool { return s == ShellPowerShell || s == ShellCmd }

// RunAs selects the account a script runs under.
type RunAs string

const (
	RunAsSystem    RunAs = "system"
	RunAsUser      RunAs = "user"
	RunAsSystemGUI RunAs = "system_gui"
)

// Valid reports whether r is an account mode agents know. The empty value
// is not valid here; decoders replace it with RunAsSystem.
func (r RunAs) Valid() bool { return r == RunAsSystem || r == RunAsUser || r == RunAsSystemGUI }

// orDefault returns r, or RunAsSystem when r is unset, so that the wire
// always carries an explicit value.
func (r RunAs) orDefault() RunAs {
	if r == "" {
		return RunAsSystem
	}
	return r
}

// ScheduleMode decides whom a schedule tick fires at (behaviour.md §3).
type ScheduleMode string

const (
	ModeEveryTick     ScheduleMode = "every_tick"
	ModeOncePerPC     ScheduleMode = "once_per_pc"
	ModeOncePerTarget ScheduleMode = "once_per_target"
)

// Valid reports whether m is a known mode. The empty value is not valid
// here; decoders replace it with ModeEveryTick.
func (m ScheduleMode) Valid() bool {
	return m == ModeEveryTick || m == ModeOncePerPC || m == ModeOncePerTarget
}

func (m ScheduleMode) orDefault() ScheduleMode {
	if m == "" {
		return ModeEveryTick
	}
	return m
}

// OS families reported in Heartbeat.OsFamily.
const (
	OSWindows = "windows"
	OSLinux   = "linux"
	OSMacOS   = "macos"
)
