// Copy buttons: <button data-copy="ID"> copies the value of the element with that id.
// Everything works without this script; it only saves a select-and-copy.
document.addEventListener('click', (event) => {
  const text = event.target.closest('button[data-copy-text]');
  if (text) {
    navigator.clipboard.writeText(text.dataset.copyText).then(() => { text.textContent = 'copied'; });
    return;
  }
  const button = event.target.closest('button[data-copy]');
  if (!button) return;
  const field = document.getElementById(button.dataset.copy);
  if (!field) return;
  navigator.clipboard.writeText(field.value || field.textContent).then(() => {
    button.textContent = 'Copied';
  });
});

// Live preview of the next fire times while the cron expression is typed. Without this
// script the Preview button does the same with a round trip.
const cron = document.getElementById('rotation_schedule');
const fires = document.getElementById('fires');
const firesError = document.getElementById('fires-error');
if (cron && fires && !cron.readOnly) {
  let timer;
  cron.addEventListener('input', () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const res = await fetch('/admin/schedule/preview?cron=' + encodeURIComponent(cron.value), { credentials: 'same-origin' });
      if (!res.ok) return;
      const body = await res.json();
      firesError.hidden = !body.error;
      firesError.textContent = body.error || '';
      fires.replaceChildren(...(body.fires || []).map((t) => {
        const li = document.createElement('li');
        li.textContent = t;
        return li;
      }));
    }, 250);
  });
}
