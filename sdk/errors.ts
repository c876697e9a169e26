/** An error answered by the API (or a transport failure, code NETWORK_ERROR). */
export class BoxdApiError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly status: number,
  ) {
    super(message);
    this.name = 'BoxdApiError';
  }
}
