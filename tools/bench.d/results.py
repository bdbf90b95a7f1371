"""Reading the key=value results files of `tools/bench` (shared by the reports).

Lines: FACT_PREFIX.<name>=<text> are facts (machine, tools, dates); every other key
may repeat, once per round, with a number; a value that is not a number is a note
(an error or a skip the report lists at the end).
"""
import statistics


def read_rounds(path, fact_prefixes=("meta.",)):
    """Returns (values: key -> [float per round], facts: name -> text, notes: [text])."""
    values, facts, notes = {}, {}, []
    for line in open(path):
        key, _, value = line.rstrip("\n").partition("=")
        if key.startswith(fact_prefixes):
            facts[key.split(".", 1)[1]] = value
            continue
        try:
            values.setdefault(key, []).append(float(value))
        except ValueError:
            notes.append("%s: %s" % (key, value))
    return values, facts, notes


def median(values, key):
    return statistics.median(values[key]) if values.get(key) else None


def cell(value, decimals):
    return "-" if value is None else ("{:,.%df}" % decimals).format(value)


def print_facts(facts):
    for name in sorted(facts):
        print("- %s: %s" % (name, facts[name]))


def print_notes(notes):
    if notes:
        print("\nNotes:")
        for note in notes:
            print("- " + note)
