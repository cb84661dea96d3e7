"""A DataTable whose rows are replaced by keyed snapshots without losing the user's selected row.

Polling redraws the tables every second; rebuilding them naively would throw the cursor back to
the top each time. Rows here carry a key (a task id, a worker id, a level), cells are always
``rich.text.Text`` (never parsed as markup), and the cursor follows its key across refreshes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text
from textual.coordinate import Coordinate
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey

#: One row: its key and its cells in column order.
Row = tuple[str, Sequence[Text]]


class KeyedTable(DataTable[Text]):
    """A row-cursor DataTable fed whole snapshots through :meth:`sync`."""

    #: (column key, label) pairs, set by subclasses.
    COLUMNS: Sequence[tuple[str, str]] = ()
    #: Show the cursor row while another widget has focus (the task list's selection always matters).
    CURSOR_WHEN_BLURRED: ClassVar[bool] = True

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes, cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        """Create the columns."""
        for key, label in self.COLUMNS:
            self.add_column(label, key=key)
        self.show_cursor = self.CURSOR_WHEN_BLURRED or self.has_focus

    def on_focus(self) -> None:
        """Show the cursor row while focused."""
        self.show_cursor = True

    def on_blur(self) -> None:
        """Hide the cursor row unless it matters without focus."""
        self.show_cursor = self.CURSOR_WHEN_BLURRED

    @property
    def row_keys(self) -> list[str]:
        """The row keys in display order."""
        return [row.key.value for row in self.ordered_rows if row.key.value is not None]

    def selected_key(self) -> str | None:
        """The key of the row under the cursor, or None when the table is empty."""
        if self.row_count == 0 or not self.is_valid_row_index(self.cursor_row):
            return None
        return self.coordinate_to_cell_key(Coordinate(self.cursor_row, 0)).row_key.value

    def select_key(self, key: str) -> bool:
        """Move the cursor to the row with this key; False if there is none."""
        if key not in self.row_keys:
            return False
        self.move_cursor(row=self.get_row_index(key))
        return True

    def sync(self, rows: Sequence[Row]) -> None:
        """Show exactly these rows, in order, updating cells in place when the keys are unchanged."""
        keys = [key for key, _ in rows]
        column_keys = [key for key, _ in self.COLUMNS]
        if keys == self.row_keys:
            columns = self.columns
            for key, cells in rows:
                old = self.get_row(key)
                for column, new, previous in zip(column_keys, cells, old, strict=False):
                    if new != previous:
                        # Widths only grow here: DataTable measures a whole column again for each
                        # updated cell narrower than the column, every second on every row (an age,
                        # a run time) that is all of a core for 200 rows. A rebuild fits them again.
                        wider = new.cell_len > columns[ColumnKey(column)].content_width
                        self.update_cell(key, column, new, update_width=wider)
            return
        selected = self.selected_key()
        cursor = self.cursor_row
        self.clear()
        for key, cells in rows:
            self.add_row(*cells, key=key)
        if not rows:
            return
        if selected is not None and selected in keys:
            self.move_cursor(row=keys.index(selected))
        else:
            self.move_cursor(row=min(max(cursor, 0), len(rows) - 1))
