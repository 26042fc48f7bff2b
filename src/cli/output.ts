/** How a command prints: aligned tables for people, one JSON document with --json for programs. */
export interface Output {
  json: boolean;
  /** Prints `value` as JSON, or runs `human` to print it for people. */
  print(value: unknown, human: () => void): void;
  line(text?: string): void;
}

export function createOutput(
  json: boolean,
  write: (text: string) => void = (text) => process.stdout.write(text),
): Output {
  return {
    json,
    print(value, human) {
      if (json) write(`${JSON.stringify(value, null, 2)}\n`);
      else human();
    },
    line(text = '') {
      write(`${text}\n`);
    },
  };
}

export type Cell = string | number | null | undefined | Date;

/** Columns padded to their widest cell; numbers aligned right, everything else left. */
export function table(headers: string[], rows: Cell[][]): string {
  const text = rows.map((row) => row.map(cellText));
  const widths = headers.map((header, i) => Math.max(header.length, ...text.map((row) => row[i]!.length)));
  const numeric = headers.map((_, i) => rows.length > 0 && rows.every((row) => typeof row[i] === 'number'));
  const render = (cells: string[]) =>
    cells
      .map((cell, i) => (numeric[i] ? cell.padStart(widths[i]!) : cell.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [
    render(headers.map((header, i) => (numeric[i] ? header.padStart(widths[i]!) : header))),
    ...text.map(render),
  ].join('\n');
}

/** Label/value pairs, one per line, labels aligned. */
export function fields(pairs: Array<[string, Cell]>): string {
  const width = Math.max(...pairs.map(([label]) => label.length));
  return pairs.map(([label, value]) => `${`${label}:`.padEnd(width + 1)}  ${cellText(value)}`).join('\n');
}

function cellText(cell: Cell): string {
  if (cell === null || cell === undefined) return '-';
  if (cell instanceof Date) return cell.toISOString();
  return String(cell);
}
