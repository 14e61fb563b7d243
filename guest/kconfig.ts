// Reading a kconfig fragment and checking that a resolved .config honours it.
//
// kconfig never complains about an option it cannot set: a `CONFIG_FOO=y` whose "depends on" is unmet is
// silently dropped by `make olddefconfig`. So after merging we compare the fragment, line by line, with
// the .config kconfig wrote, and the build fails listing every option that did not come out as asked.

/** A requested option: `value` is "y", "m", a string/number as written, or "n" for "# CONFIG_X is not set". */
export interface KconfigOption {
  name: string;
  value: string;
}

// Both forms kconfig itself writes (scripts/kconfig/confdata.c): "CONFIG_X=v" and "# CONFIG_X is not set".
const SET_LINE = /^(CONFIG_[A-Za-z0-9_]+)=(.*)$/;
const UNSET_LINE = /^# (CONFIG_[A-Za-z0-9_]+) is not set$/;

/** Parses a fragment or a whole .config. Other comments and blank lines are ignored. Later lines win. */
export function parseKconfig(text: string): Map<string, string> {
  const options = new Map<string, string>();
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    const set = SET_LINE.exec(line);
    const unset = UNSET_LINE.exec(line);
    if (set) options.set(set[1]!, set[2]!);
    else if (unset) options.set(unset[1]!, "n");
  }
  return options;
}

/** The options of a fragment, in file order. */
export function fragmentOptions(fragment: string): KconfigOption[] {
  return [...parseKconfig(fragment)].map(([name, value]) => ({ name, value }));
}

/** Every fragment option whose value in `dotconfig` differs from what was asked, with what kconfig chose. */
export function droppedOptions(fragment: string, dotconfig: string): { name: string; wanted: string; got: string }[] {
  const resolved = parseKconfig(dotconfig);
  const dropped = [];
  for (const { name, value } of fragmentOptions(fragment)) {
    // An option absent from .config is one whose menu is hidden altogether: that counts as "n".
    const got = resolved.get(name) ?? "n";
    if (got !== value) dropped.push({ name, wanted: value, got });
  }
  return dropped;
}
