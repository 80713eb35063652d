// Ask before a destructive button's form is sent: buttons carry data-confirm="question".
// (A file of its own, not an onclick attribute: the pages' CSP allows no inline script.)
document.addEventListener("submit", (event) => {
  const question = event.submitter && event.submitter.dataset.confirm;
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});
