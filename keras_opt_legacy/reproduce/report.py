"""What the reproduction shows: plots, the final table, report.md and results.json."""
import json
import os

import numpy as np


STYLES = ('-', '--', '-.', ':')


class Output(object):
    """The output directory: files and plots of the experiments."""

    def __init__(self, directory):
        self.directory = directory
        os.makedirs(directory, exist_ok=True)

    def path(self, name):
        return os.path.join(self.directory, name)

    def plot(self, name, title, xlabel, curves, ylabel=None, log=False, xy=False,
             dashed_every_second=False):
        """Save a line plot of `curves` (label -> values, or (x, y) pairs if `xy`) as NAME.png."""
        return self.panels(name, [(title, curves, ylabel)], xlabel, log=log, xy=xy,
                           dashed_every_second=dashed_every_second)

    def panels(self, name, panels, xlabel, log=False, xy=False, dashed_every_second=False,
               title=None):
        """Save side-by-side line plots as NAME.png: `panels` is a list of (title, curves,
        ylabel), `curves` as in `plot`; `title` a title over all of them."""
        import matplotlib
        matplotlib.use('Agg')
        from matplotlib import pyplot

        figure, axes_list = pyplot.subplots(1, len(panels), figsize=(8 * len(panels) ** .6, 4.5),
                                            dpi=100, squeeze=False)
        for axes, (panel_title, curves, ylabel) in zip(axes_list[0], panels):
            for i, (label, values) in enumerate(curves.items()):
                values = np.asarray(values, dtype=float)
                x, y = ((values[:, 0], values[:, 1]) if xy else
                        (np.arange(1, len(values) + 1), values))
                # Equal curves must stay visible: vary the style (or pair solid/dashed).
                style = (('--' if i % 2 else '-') if dashed_every_second else
                         STYLES[i % len(STYLES)])
                axes.plot(x, y, style, label=label, linewidth=2.4 if style == '-' else 1.6)
            if log:
                axes.set_yscale('log')
            axes.set_title(panel_title)
            axes.set_xlabel(xlabel)
            if ylabel:
                axes.set_ylabel(ylabel)
            axes.grid(True, alpha=0.3)
            axes.legend(fontsize=8)
        if title:
            figure.suptitle(title)
        figure.tight_layout(rect=(0, 0, 1, 0.94) if title else (0, 0, 1, 1))
        filename = name + '.png'
        figure.savefig(self.path(filename))
        pyplot.close(figure)
        return filename

    def bars(self, name, title, values, ylabel=None):
        """Save a bar chart of `values` (label -> number), each bar labelled with its value, as
        NAME.png."""
        import matplotlib
        matplotlib.use('Agg')
        from matplotlib import pyplot

        figure, axes = pyplot.subplots(figsize=(8, 4.5), dpi=100)
        labels = list(values)
        heights = [values[label] for label in labels]
        axes.bar(range(len(labels)), heights, color=['C%d' % (i % 10) for i in range(len(labels))])
        for x, height in enumerate(heights):
            axes.annotate('%g' % height, (x, height), ha='center', va='bottom', fontsize=8)
        axes.set_xticks(range(len(labels)))
        axes.set_xticklabels(labels, rotation=30, ha='right')
        axes.set_title(title)
        if ylabel:
            axes.set_ylabel(ylabel)
        axes.grid(True, axis='y', alpha=0.3)
        figure.tight_layout()
        filename = name + '.png'
        figure.savefig(self.path(filename))
        pyplot.close(figure)
        return filename


def verdict_text(result):
    if result.verdict is None:
        return 'error'
    return 'reproduced' if result.verdict else 'NOT reproduced'


def table(results, seconds):
    rows = [('experiment', 'verdict', 'time', 'measured')]
    rows += [(r.name, verdict_text(r), '%.1fs' % seconds[r.name], r.summary) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ['  '.join(cell.ljust(width) for cell, width in zip(row[:3], widths)) + '  ' + row[3]
             for row in rows]
    return '\n'.join([lines[0], '-' * len(lines[0])] + lines[1:])


def write(output, results, seconds, meta):
    """DIR/results.json (every measured figure) and DIR/report.md (claims, figures, plots)."""
    with open(output.path('results.json'), 'w') as f:
        json.dump({'meta': meta, 'experiments': [
            {'name': r.name, 'claim': r.claim, 'verdict': verdict_text(r),
             'seconds': round(seconds[r.name], 2), 'measured': r.measured, 'plots': r.plots}
            for r in results]}, f, indent=2, default=_plain)
    lines = ['# keras_opt_legacy: reproducing the classic posts', '',
             'Data: %(data)s. Stack: TensorFlow %(tensorflow)s, Keras %(keras)s, Python '
             '%(python)s. Mode: %(mode)s.' % meta, '', '```', table(results, seconds), '```', '']
    for r in results:
        lines += ['## %s: %s' % (r.name, verdict_text(r)), '', '**Claim.** %s' % r.claim, '',
                  '**Measured.** %s' % r.summary, '']
        if isinstance(r.measured, dict) and 'table' in r.measured:  # {'columns': , 'rows': }
            lines += [markdown_table(r.measured['table']), '']
        lines += ['```json',
                  json.dumps(r.measured, indent=2, default=_plain), '```', '']
        lines += ['![%s](%s)' % (plot, plot) for plot in r.plots] + ['']
    with open(output.path('report.md'), 'w') as f:
        f.write('\n'.join(lines))


def markdown_table(table):
    """A Markdown table of {'columns': [...], 'rows': [[...], ...]}."""
    lines = ['| %s |' % ' | '.join(table['columns']),
             '|' + '---|' * len(table['columns'])]
    lines += ['| %s |' % ' | '.join(str(cell) for cell in row) for row in table['rows']]
    return '\n'.join(lines)


def _plain(value):
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
